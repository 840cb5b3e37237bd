// The reference tus server, @tus/server with its file store, for the upload benchmark.
//
//   node tus-reference-server.mjs --port PORT --dir DIRECTORY
//
// Serves tus 1.0.0 at /files on 127.0.0.1:PORT and prints "listening" once it is ready.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const { values: args } = parseArgs({
  options: { port: { type: 'string' }, dir: { type: 'string' } },
});

const tus = new Server({ path: '/files', datastore: new FileStore({ directory: args.dir }) });
const server = createServer((req, res) => tus.handle(req, res));
server.listen(Number(args.port), '127.0.0.1', () => console.log('listening'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
