// A client that is not ours: @grpc/proto-loader reads proto/xmargin/v1 alone (no generated code).
// Requests are built from the worked cases ($XMARGIN_CASES_DIR, default ../shared/cases).
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const fs = require('fs');
const path = require('path');
const PROTO_DIR = path.join(__dirname, '..', '..', 'proto');
const CASES_DIR = process.env.XMARGIN_CASES_DIR || path.join(__dirname, '..', '..', '..', 'shared', 'cases');
const def = loader.loadSync(['xmargin/v1/service.proto'], {
  includeDirs: [PROTO_DIR], keepCase: true, longs: Number, enums: String, defaults: false, oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def).xmargin.v1;
function client(port) {
  return new pkg.XmarginService(`127.0.0.1:${port}`, grpc.credentials.createInsecure(),
    { 'grpc.max_send_message_length': 256 << 20, 'grpc.max_receive_message_length': 256 << 20 });
}
const P = (k) => 'INSTRUMENT_KIND_' + k;
function instrument(i) {
  const out = { id: i.id, ccp: 'CCP_' + i.ccp, kind: P(i.kind) };
  if (i.contract) out.contract = i.contract;
  if (i.maturity) out.maturity = i.maturity;
  if (i.coupon !== undefined) out.coupon = i.coupon;
  if (i.collateral_maturity) out.collateral_maturity = i.collateral_maturity;
  if (i.collateral_kind) out.collateral_kind = P(i.collateral_kind);
  if (i.sensitivities) out.sensitivities = { values: i.sensitivities };
  if (i.pnl) out.pnl = { values: i.pnl };
  return out;
}
function position(p) {
  const out = { instrument: p.instrument, quantity: p.quantity, xm_quantity: p.xm_quantity ?? 0, pinned: !!p.pinned };
  if (p.lot !== undefined) out.lot = p.lot;
  return out;
}
function model(m) {
  const out = { confidence: m.confidence, horizon_days: m.horizon_days, measure: m.measure === 'VaR' ? 'MEASURE_VAR' : 'MEASURE_ES' };
  if (m.lookback !== undefined) out.lookback = m.lookback;
  if (m.stress_ids) out.stress_ids = m.stress_ids;
  if (m.stress_weight) out.stress_weight = m.stress_weight;
  if (m.addon_rate) { out.addon_rate = m.addon_rate; out.addon_threshold = m.addon_threshold; }
  return out;
}
function loadCase(name) { // a fresh copy each call
  return JSON.parse(fs.readFileSync(path.join(CASES_DIR, name), 'utf8'));
}
function base(c) {
  return {
    run: { business_date: c.business_date, cycle: 'CYCLE_' + c.cycle, run_number: 1, request_id: 'outside' },
    scenario_set: { factors: c.factors, ids: c.scenarios.ids, shocks: c.scenarios.shocks.flat() },
    models: { ficc: model(c.models.FICC), cme: model(c.models.CME) },
    program: c.program ? { savings_cap: c.program.savings_cap } : undefined,
  };
}
function accountRows(c) {
  return { name: c.name, clearing_member: c.clearing_member, customer: c.customer,
    instruments: c.instruments.map(instrument), positions: c.positions.map(position) };
}
function columnsOf(acc) {
  const cols = { instrument_id: [], ccp: [], kind: [], contract: [], maturity: [], has_coupon: [], coupon: [],
    collateral_maturity: [], collateral_kind: [], risk: [], risk_count: [], risk_values: [],
    position_instrument: [], quantity: [], xm_quantity: [], has_lot: [], lot: [], pinned: [] };
  for (const i of acc.instruments) {
    cols.instrument_id.push(i.id); cols.ccp.push(i.ccp); cols.kind.push(i.kind);
    cols.contract.push(i.contract || ''); cols.maturity.push(i.maturity || '');
    cols.has_coupon.push(i.coupon !== undefined); cols.coupon.push(i.coupon ?? 0);
    cols.collateral_maturity.push(i.collateral_maturity || ''); cols.collateral_kind.push(i.collateral_kind || 'INSTRUMENT_KIND_UNSPECIFIED');
    const v = i.sensitivities ? ['RISK_VECTOR_SENSITIVITIES', i.sensitivities.values] : i.pnl ? ['RISK_VECTOR_PNL', i.pnl.values] : ['RISK_VECTOR_UNSPECIFIED', []];
    cols.risk.push(v[0]); cols.risk_count.push(v[1].length); cols.risk_values.push(...v[1]);
  }
  for (const p of acc.positions) {
    cols.position_instrument.push(p.instrument); cols.quantity.push(p.quantity); cols.xm_quantity.push(p.xm_quantity ?? 0);
    cols.has_lot.push(p.lot !== undefined); cols.lot.push(p.lot === undefined ? 0 : p.lot); cols.pinned.push(!!p.pinned);
  }
  return cols;
}
function optimiseRequest(c, form) {
  const req = base(c);
  const acc = accountRows(c);
  req.options = { time_limit: { seconds: 20 } };
  if (form === 'columns') {
    req.account_columns = columnsOf(acc);
    req.account = { name: acc.name, clearing_member: acc.clearing_member, customer: acc.customer };
  } else req.account = acc;
  return req;
}
function call(cl, method, req, timeoutS = 60) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    cl[method](req, { deadline: Date.now() + timeoutS * 1000 }, (err, res) => {
      const ms = Date.now() - t0;
      if (err) resolve({ code: grpc.status[err.code], details: err.details, ms, md: err.metadata });
      else resolve({ code: 'OK', res, ms });
    });
  });
}
module.exports = { grpc, pkg, client, loadCase, base, accountRows, columnsOf, optimiseRequest, call, instrument, position, model };
