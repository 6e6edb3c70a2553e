DROP TABLE sign_in_failures;
DROP TABLE sign_in_links;
DROP TABLE refresh_tokens;
DROP TABLE authorization_codes;
DROP TABLE users;
