// Verifies webhook deliveries with the Standard Webhooks reference library
// (npm standardwebhooks), as a receiver would. Reads one JSON object on
// stdin: {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
// and prints one JSON array: for each delivery {"ok": true, "event": <the
// parsed body>} or {"ok": false, "error": "..."}.
//
//   node verify.mjs < deliveries.json
import { Webhook } from "standardwebhooks";
import { readFileSync } from "node:fs";

const input = JSON.parse(readFileSync(0, "utf8"));
const wh = new Webhook(input.secret);
const out = input.deliveries.map(({ headers, body }) => {
  try {
    return { ok: true, event: wh.verify(body, headers) };
  } catch (err) {
    return { ok: false, error: String((err && err.message) || err) };
  }
});
console.log(JSON.stringify(out));
