// Uploads a file to a tus endpoint with tus-js-client, optionally cutting the
// transfer off after some bytes and resuming it with a new client from the
// upload URL (as a restarted program would). Prints one JSON line.
//
//   node upload.mjs ENDPOINT TOKEN FILE [CUT_AFTER_BYTES] [METADATA_JSON]
import { Upload } from "tus-js-client";
import { readFileSync } from "node:fs";
import { basename } from "node:path";

const [endpoint, token, file, cutAfter = "0", metaJSON = "{}"] = process.argv.slice(2);
const data = readFileSync(file);
const metadata = { filename: basename(file), ...JSON.parse(metaJSON) };
const headers = { Authorization: `Bearer ${token}` };
const out = { size: data.length };

function run(options) {
  return new Promise((resolve, reject) => {
    let upload;
    upload = new Upload(data, {
      endpoint, headers, metadata, chunkSize: 256 * 1024, retryDelays: [],
      ...options,
      onAfterResponse(req, res) {
        const id = res.getHeader("Dab-Task-Id");
        if (id) { out.task_id = id; out.status_url = res.getHeader("Dab-Status-Url"); }
      },
      onProgress(sent) {
        if (options.cut && sent >= options.cut && !out.cut_at) {
          out.cut_at = sent;
          upload.abort().then(() => resolve(upload.url), reject);
        }
      },
      onSuccess() { resolve(upload.url); },
      onError(err) { reject(err); },
    });
    upload.start();
  });
}

try {
  const cut = Number(cutAfter);
  out.url = await run({ cut });
  if (cut > 0) {
    // A new client, as after a crash: it asks the server for the offset and sends the rest.
    out.resumed = true;
    out.url = await run({ uploadUrl: out.url, cut: 0 });
  }
  console.log(JSON.stringify(out));
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.message || err) }));
  process.exit(1);
}
