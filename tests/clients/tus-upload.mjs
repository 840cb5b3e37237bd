// Uploads a file with tus-js-client, the reference tus client, as a browser or Node app would.
//
//   node tus-upload.mjs --endpoint URL --file PATH --token TOKEN [--chunk-size BYTES]
//                       [--stop-after BYTES] [--resume UPLOAD_URL]
//
// With --stop-after it aborts once that many bytes were acknowledged; with --resume it continues the
// upload at UPLOAD_URL from the offset the server reports. Prints one JSON line: {"url", "offset", "done"}.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import * as tus from 'tus-js-client';

const { values: args } = parseArgs({
  options: {
    endpoint: { type: 'string' },
    file: { type: 'string' },
    token: { type: 'string' },
    'chunk-size': { type: 'string', default: String(1024 * 1024) },
    'stop-after': { type: 'string' },
    resume: { type: 'string' },
  },
});

const data = readFileSync(args.file);
const stopAfter = args['stop-after'] ? Number(args['stop-after']) : Infinity;

const result = await new Promise((resolve, reject) => {
  let acknowledged = 0;
  const upload = new tus.Upload(data, {
    endpoint: args.endpoint,
    uploadUrl: args.resume ?? null,
    chunkSize: Number(args['chunk-size']),
    headers: { Authorization: `Bearer ${args.token}` },
    metadata: { filename: basename(args.file), filetype: 'video/mp4' },
    retryDelays: [],
    onChunkComplete(_chunkSize, bytesAccepted) {
      acknowledged = bytesAccepted;
      if (bytesAccepted >= stopAfter) {
        upload.abort().then(() => resolve({ url: upload.url, offset: acknowledged, done: false }), reject);
      }
    },
    onSuccess() {
      resolve({ url: upload.url, offset: data.length, done: true });
    },
    onError: reject,
  });
  upload.start();
});
console.log(JSON.stringify(result));
