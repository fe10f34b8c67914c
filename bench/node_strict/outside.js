// Outside session s27: every RPC with valid and hostile messages (missing fields, a oneof given
// twice on the wire, unknown fields of a newer proto at the top and nested, huge repeated fields);
// 'cases' mode answers the public cases for comparison with the Python client. One JSON line a call.
//   cd bench/node_strict && npm install; xmargin serve --port P &
//   XMARGIN_CASES_DIR=../../../shared/cases node outside.js P [all|cases|hostile]
const L = require('./lib');
const grpc = L.grpc;
const fs = require('fs');
const port = process.argv[2];
const cl = L.client(port);
const out = (name, r) => console.log(JSON.stringify({ name, code: r.code, details: r.details, ms: r.ms, res: r.code === 'OK' ? r.res : undefined }));
const cases = fs.readdirSync(process.env.XMARGIN_CASES_DIR).filter((f) => f.endsWith('.json')).sort();
const clone = (x) => JSON.parse(JSON.stringify(x));
// raw calls: serialise with the loaded type, then append bytes (unknown fields of a newer proto)
function rawCall(method, req, extra, timeoutS = 60) {
  const def = L.pkg.XmarginService.service[method];
  const body = Buffer.concat([def.requestSerialize(req), extra]);
  return new Promise((resolve) => {
    const t0 = Date.now();
    cl.makeUnaryRequest(def.path, (b) => b, def.responseDeserialize, body, { deadline: Date.now() + timeoutS * 1000 }, (err, res) => {
      resolve(err ? { code: grpc.status[err.code], details: err.details, ms: Date.now() - t0 } : { code: 'OK', res, ms: Date.now() - t0 });
    });
  });
}
const varintField = (n, v) => Buffer.from([...(function* () { let t = (n << 3) >>> 0; while (t > 127) { yield (t & 127) | 128; t >>>= 7; } yield t; })(), v]);
function lenField(n, bytes) { const tag = []; let t = (n << 3) | 2; while (t > 127) { tag.push((t & 127) | 128); t >>>= 7; } tag.push(t); const len = []; let l = bytes.length; while (l > 127) { len.push((l & 127) | 128); l >>>= 7; } len.push(l); return Buffer.concat([Buffer.from(tag), Buffer.from(len), bytes]); }
(async () => {
  const mode = process.argv[3] || 'all';
  if (mode === 'all' || mode === 'cases') {
    for (const f of cases) {
      const c = L.loadCase(f);
      const req = L.optimiseRequest(c, 'rows');
      if (c.options) { req.options = { ...req.options, continuous: c.options.integral === false, ...(c.options.transfer_cost ? { transfer_cost: c.options.transfer_cost } : {}) }; }
      out(`Optimise ${f}`, await L.call(cl, 'Optimise', req));
      const m = L.base(c); m.account = L.accountRows(c);
      out(`ComputeMargin ${f}`, await L.call(cl, 'ComputeMargin', m));
      out(`CheckEligibility ${f}`, await L.call(cl, 'CheckEligibility', { run: m.run, clearing_member: c.clearing_member, customer: c.customer, instruments: c.instruments.map(L.instrument) }));
    }
  }
  if (mode === 'all' || mode === 'hostile') {
    const c = L.loadCase('05-integral-small-lots.json');
    const good = L.optimiseRequest(c, 'rows');
    const drop = (k) => { const r = clone(good); delete r[k]; return r; };
    for (const k of ['run', 'account', 'scenario_set', 'models']) out(`Optimise without ${k}`, await L.call(cl, 'Optimise', drop(k)));
    out('Optimise empty message', await L.call(cl, 'Optimise', {}));
    for (const rpc of ['ComputeMargin', 'WhatIf', 'CheckEligibility', 'RegisterScenarioSet', 'Explain', 'GetScenarioSet', 'ListScenarioSets'])
      out(`${rpc} empty message`, await L.call(cl, rpc, {}));
    const noModel = clone(good); delete noModel.models.cme; out('Optimise models without cme', await L.call(cl, 'Optimise', noModel));
    const refEmpty = clone(good); delete refEmpty.scenario_set; refEmpty.scenario_set_ref = {}; out('Optimise scenario_set_ref empty', await L.call(cl, 'Optimise', refEmpty));
    const refBad = clone(good); delete refBad.scenario_set; refBad.scenario_set_ref = { id: 'no-such-set' }; out('Optimise scenario_set_ref unknown', await L.call(cl, 'Optimise', refBad));
    // unknown fields of a newer proto: top level (varint 99, bytes 100), both answered as the plain request
    out('Optimise unknown varint field 99', await rawCall('Optimise', good, varintField(99, 1)));
    out('Optimise unknown bytes field 100', await rawCall('Optimise', good, lenField(100, Buffer.from('newer'))));
    // oneof given twice on the wire: scenario_set then scenario_set_ref (proto: the last wins)
    out('Optimise oneof both (ref last)', await rawCall('Optimise', good, lenField(4, lenField(1, Buffer.from('no-such-set')))));
    // a nested unknown field: an AccountBook with field 99 appended (account = field 2, merged)
    out('Optimise nested unknown field', await rawCall('Optimise', good, lenField(2, varintField(99, 7))));
    // huge repeated fields
    const wi = L.base(c); wi.account = L.accountRows(c);
    const w1 = clone(wi); w1.exclude_positions = Array.from({ length: 200000 }, (_, i) => `X${i}`); out('WhatIf 200k exclusions', await L.call(cl, 'WhatIf', w1));
    const w2 = clone(wi); w2.add_trades = Array.from({ length: 50000 }, (_, i) => ({ instrument: 'TNZ6', quantity: 1 })); out('WhatIf 50k trades same instrument', await L.call(cl, 'WhatIf', w2));
    const o1 = clone(good); o1.models.ficc.stress_ids = Array.from({ length: 300000 }, () => c.scenarios.ids[0]); o1.models.ficc.stress_weight = 0.5; out('Optimise 300k stress ids', await L.call(cl, 'Optimise', o1));
    const o2 = clone(good); o2.warm_start = { xm_quantity: Object.fromEntries(Array.from({ length: 200000 }, (_, i) => [`W${i}`, 1])) }; out('Optimise warm start 200k ids', await L.call(cl, 'Optimise', o2));
    const e1 = { run: good.run, clearing_member: c.clearing_member, customer: c.customer, instruments: Array.from({ length: 100000 }, (_, i) => ({ id: `I${i}`, ccp: 'CCP_CME', kind: 'INSTRUMENT_KIND_FUTURE', contract: 'TY', sensitivities: { values: [1] } })) };
    out('CheckEligibility 100k instruments', await L.call(cl, 'CheckEligibility', e1));
    const b1 = { run: good.run, accounts: [], scenario_set: good.scenario_set, models: good.models }; out('OptimiseBatch no accounts', await new Promise((res) => { const t0 = Date.now(); const s = cl.OptimiseBatch(b1); const got = []; s.on('data', (d) => got.push(d)); s.on('error', (e) => res({ code: grpc.status[e.code], details: e.details, ms: Date.now() - t0 })); s.on('end', () => res({ code: 'OK', res: { n: got.length }, ms: Date.now() - t0 })); }));
    const ls = await L.call(cl, 'ListScenarioSets', { page_size: 0 }); out('ListScenarioSets page_size 0', ls);
  }
  cl.close();
})();
