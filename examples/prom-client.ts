import { Registry } from 'prom-client';
import { createCertEngine, localCaIssuer, memoryStorage, registerPromClient } from 'certstate';

const engine = createCertEngine({ storage: memoryStorage(), issuers: [localCaIssuer()], names: ['app.localhost'] });
const admin = engine.adminHandler(); // its /metrics and the registry show the same values
const registry = new Registry(); // or prom-client's default `register`
const { unregister } = registerPromClient(engine, registry, { collector: admin.metrics });
await engine.start();
await engine.getCertificate('app.localhost');
console.log(await registry.getSingleMetricAsString('certstate_names'));
unregister();
admin.close();
await engine.stop();
