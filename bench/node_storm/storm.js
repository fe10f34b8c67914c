// A refusal storm from a client that is not ours: @grpc/grpc-js, no generated code, the
// requests as raw bytes written by `python -m xmargin.bench.load --write-requests DIR`.
//
//   cd bench/node_storm && npm install
//   python -m xmargin.bench.load --write-requests /tmp/requests
//   python -m xmargin.server --port P --workers 2 --max-queue 8 --token=caller-0 ... \
//       --token=caller-3 --token=storm &
//   node storm.js P SECONDS /tmp/requests [nostorm|small|large] [all|callers|probes]
//
// For SECONDS: 4 callers (tokens caller-0..3) loop the small Optimise (worked case 01); 32
// callers under one token ("storm") send Optimise as fast as they are answered (the large
// request, a 6 MB whole-lot book, or the small one; none with "nostorm"); one prober sends the
// small Optimise every 0.1 s under the storm's token (its refusals: what an uncontended caller
// of a refused client sees); one health check every 0.1 s. Every caller has its own connection.
// The last argument splits the groups between processes: "callers" runs the 4 callers and the
// storm, "probes" the prober and the health check (so that a second process measures the server
// without waiting behind the storm's event loop); "all" (the default) runs every group here.
// Prints p50/p99/max latency (ms) and the status codes of each group as JSON.
const grpc = require('@grpc/grpc-js');
const fs = require('fs');
const path = require('path');

const [port, seconds, dir, mode, parts] = [
  process.argv[2], Number(process.argv[3] || 10), process.argv[4], process.argv[5] || 'large',
  process.argv[6] || 'all',
];
const small = fs.readFileSync(path.join(dir, 'small.bin'));
const large = fs.readFileSync(path.join(dir, 'hard.bin'));
const raw = (bytes) => bytes;
const OPTIMISE = '/xmargin.v1.XmarginService/Optimise';
const HEALTH = '/grpc.health.v1.Health/Check';
const end = Date.now() + seconds * 1000;
const results = { good: [], storm: [], prober: [], health: [] };

function connect() {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1, // a connection of its own
  });
}

function call(client, method, body, token, timeoutSeconds) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    client.makeUnaryRequest(method, raw, raw, body, metadata,
      { deadline: Date.now() + timeoutSeconds * 1000 }, (error) => {
        resolve({ ms: Number(process.hrtime.bigint() - started) / 1e6, code: error ? error.code : 0 });
      });
  });
}

async function loop(group, method, body, token, pauseMs, timeoutSeconds) {
  const client = connect();
  // Connect before timing: a call's latency, not the connection's set-up.
  await new Promise((resolve) => client.waitForReady(Date.now() + 10000, resolve));
  while (Date.now() < end) {
    results[group].push(await call(client, method, body, token, timeoutSeconds));
    if (pauseMs) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  client.close();
}

function percentile(sorted, q) {
  return sorted.length ? +sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1) : null;
}

function summary(outcomes, code) {
  const ms = outcomes.filter((o) => code === undefined || o.code === code).map((o) => o.ms);
  ms.sort((a, b) => a - b);
  const codes = {};
  for (const o of outcomes) codes[o.code] = (codes[o.code] || 0) + 1;
  return { calls: ms.length, p50: percentile(ms, 0.5), p99: percentile(ms, 0.99), max: percentile(ms, 1), codes };
}

(async () => {
  const OK = 0, RESOURCE_EXHAUSTED = 8;
  const callers = [];
  if (parts !== 'probes') {
    for (let i = 0; i < 4; i++) callers.push(loop('good', OPTIMISE, small, `caller-${i}`, 0, 30));
    if (mode !== 'nostorm') {
      const body = mode === 'small' ? small : large;
      for (let i = 0; i < 32; i++) callers.push(loop('storm', OPTIMISE, body, 'storm', 0, 2));
    }
  }
  if (parts !== 'callers') {
    callers.push(loop('prober', OPTIMISE, small, 'storm', 100, 30));
    callers.push(loop('health', HEALTH, Buffer.alloc(0), null, 100, 5));
  }
  await Promise.all(callers);
  console.log(JSON.stringify({
    mode,
    parts,
    seconds,
    good_ok: summary(results.good, OK),
    storm_refused: summary(results.storm, RESOURCE_EXHAUSTED),
    prober_refused: summary(results.prober, RESOURCE_EXHAUSTED),
    health_ok: summary(results.health, OK),
  }, null, 1));
})();
