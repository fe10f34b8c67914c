// Outside session s27: health (empty, the service, an unknown one, bytes that do not parse),
// reflection v1 and v1alpha (list, a symbol, an unknown symbol, garbage), an unknown method.
//   node reflection.js P
const grpc = require('@grpc/grpc-js');
const port = process.argv[2];
const ch = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
const id = (b) => b;
const str = (n, s) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from([(n << 3) | 2, b.length]), b]); };
function unary(path, body) { return new Promise((res) => ch.makeUnaryRequest(path, id, id, body, { deadline: Date.now() + 5000 }, (e, r) => res(e ? `${grpc.status[e.code]} ${e.details}` : `OK ${r.toString('hex')}`))); }
function bidi(path, msgs) { return new Promise((res) => { const s = ch.makeBidiStreamRequest(path, id, id, { deadline: Date.now() + 5000 }); const got = []; s.on('data', (d) => got.push(d.toString('latin1').replace(/[^\x20-\x7e]/g, '.'))); s.on('error', (e) => res(`${grpc.status[e.code]} ${e.details} after ${got.length}`)); s.on('end', () => res(`OK ${got.length} msgs: ${got.join(' | ').slice(0, 600)}`)); for (const m of msgs) s.write(m); s.end(); }); }
(async () => {
  console.log('health ""', await unary('/grpc.health.v1.Health/Check', Buffer.alloc(0)));
  console.log('health service', await unary('/grpc.health.v1.Health/Check', str(1, 'xmargin.v1.XmarginService')));
  console.log('health unknown', await unary('/grpc.health.v1.Health/Check', str(1, 'nope.Nope')));
  console.log('health garbage bytes', await unary('/grpc.health.v1.Health/Check', Buffer.from([0xff, 0xff, 0xff])));
  console.log('reflection v1 list', await bidi('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', [str(7, '')]));
  console.log('reflection v1alpha list', await bidi('/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', [str(7, '')]));
  console.log('reflection file_containing_symbol', await bidi('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', [str(4, 'xmargin.v1.XmarginService')]));
  console.log('reflection unknown symbol', await bidi('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', [str(4, 'no.Such')]));
  console.log('reflection garbage', await bidi('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', [Buffer.from([0xff, 0xff, 0xff])]));
  console.log('unknown method', await unary('/xmargin.v1.XmarginService/Nope', Buffer.alloc(0)));
  console.log('Optimise garbage bytes', await unary('/xmargin.v1.XmarginService/Optimise', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f])));
  ch.close();
})();
