// Builds web/dist/ (run with `npm run build`):
//   dist/pulsewave.esm.js  ES module of src/pulsewave.js with mediasoup-client;
//                          the demo imports it as ./pulsewave.esm.js
//   dist/pulsewave.js      the same as a classic script: window.PulseWave.PulseWaveClient
import { build } from 'esbuild';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const common = {
  entryPoints: [join(root, 'src/pulsewave.js')],
  bundle: true,
  platform: 'browser',
  target: ['chrome111', 'firefox120', 'safari16'],
  sourcemap: true,
  minify: true,
  keepNames: true,
  legalComments: 'linked',
  logLevel: 'info',
  // mediasoup-client logs through `debug`; keep it quiet unless localStorage.debug is set.
  define: { 'process.env.NODE_ENV': '"production"' },
};

await build({ ...common, format: 'esm', outfile: join(dist, 'pulsewave.esm.js') });
await build({ ...common, format: 'iife', globalName: 'PulseWave', outfile: join(dist, 'pulsewave.js') });
