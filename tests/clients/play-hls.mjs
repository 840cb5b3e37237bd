// Plays an HLS stream with hls.js in headless Chromium, as a viewer's browser would.
//
//   node play-hls.mjs URL [--seconds 3] [--bearer TOKEN]
//
// With --bearer, key requests (/v1/keys/…) carry the viewer's token, as a signed-in page's player would.
//
// Prints one JSON line: {"currentTime", "levels", "error"} once the video has played --seconds, or when it
// fails or 60 s pass.
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const { values: args, positionals } = parseArgs({
  options: { seconds: { type: 'string', default: '3' }, bearer: { type: 'string' } },
  allowPositionals: true,
});
const [url] = positionals;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
try {
  const page = await browser.newPage();
  await page.setContent('<video id="v" muted playsinline></video>');
  await page.addScriptTag({ path: require.resolve('hls.js/dist/hls.min.js') });
  const result = await page.evaluate(
    ({ url, seconds, bearer }) =>
      new Promise((resolve) => {
        const video = document.getElementById('v');
        const hls = new Hls({
          xhrSetup: (xhr, target) => {
            if (bearer && target.includes('/v1/keys/')) xhr.setRequestHeader('Authorization', `Bearer ${bearer}`);
          },
        });
        const done = (error) => resolve({ currentTime: video.currentTime, levels: hls.levels.length, error });
        setTimeout(() => done('timed out'), 60000);
        hls.on(Hls.Events.ERROR, (_, data) => data.fatal && done(`${data.type}: ${data.details}`));
        hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((e) => done(String(e))));
        video.addEventListener('timeupdate', () => video.currentTime >= seconds && done(null));
        hls.loadSource(url);
        hls.attachMedia(video);
      }),
    { url, seconds: Number(args.seconds), bearer: args.bearer },
  );
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
