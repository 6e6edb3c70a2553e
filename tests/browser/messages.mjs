// The console's validation messages (api/console/validate.js) for the cases in the JSON file
// argv[2]: [{kind, value, path}], kind one of name, path, port, address, integer (with max), fileSize (with perPacket).
// Prints a JSON array of messages (null: valid). tests/tests/e2e/console.rs compares them with
// the API's own messages for the same values.
import { readFileSync } from 'node:fs';
import * as V from '../../api/console/validate.js';

const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = cases.map((c) => {
  switch (c.kind) {
    case 'name': return V.captureName(c.value);
    case 'path': return V.capturePath(c.value, c.path);
    case 'port': return V.filterValue(c.value, 'port', c.path);
    case 'address': return V.filterValue(c.value, 'address', c.path);
    case 'integer': return V.integer(c.value, c.path, c.max);
    case 'fileSize': return V.fileSize(c.value, c.perPacket);
    default: throw new Error(`unknown kind ${c.kind}`);
  }
});
console.log(JSON.stringify(out));
