// An independent OCPP-J CSMS (ocpp-rpc, strict schema mode) for labkit's fleet.
// usage: node csms.js PORT   prints "listening PORT"; on SIGTERM prints one JSON line {calls, failures}.
'use strict';
const { RPCServer, createRPCError } = require('ocpp-rpc');

const port = Number(process.argv[2] || 0);
const calls = {};
const failures = [];
let txId = 0;
const now = () => new Date().toISOString();

const server = new RPCServer({ protocols: ['ocpp1.6', 'ocpp2.0.1'], strictMode: true });
server.on('client', (client) => {
    client.on('strictValidationFailure', (e) => failures.push({ identity: client.identity, error: String(e.error && e.error.message) }));
    const count = (m) => { calls[m] = (calls[m] || 0) + 1; };
    const v16 = client.protocol === 'ocpp1.6';
    const accepted = v16 ? { status: 'Accepted' } : { status: 'Accepted' };
    client.handle('BootNotification', () => { count('BootNotification'); return { status: 'Accepted', interval: 300, currentTime: now() }; });
    client.handle('Heartbeat', () => { count('Heartbeat'); return { currentTime: now() }; });
    client.handle('StatusNotification', () => { count('StatusNotification'); return {}; });
    client.handle('Authorize', () => { count('Authorize'); return v16 ? { idTagInfo: accepted } : { idTokenInfo: accepted }; });
    client.handle('StartTransaction', () => { count('StartTransaction'); txId += 1; return { transactionId: txId, idTagInfo: accepted }; });
    client.handle('StopTransaction', () => { count('StopTransaction'); return {}; });
    client.handle('MeterValues', () => { count('MeterValues'); return {}; });
    client.handle('TransactionEvent', () => { count('TransactionEvent'); return {}; });
    client.handle(({ method }) => { count(method); throw createRPCError('NotImplemented'); });
});

server.listen(port, '127.0.0.1').then((http) => {
    console.log(`listening ${http.address().port}`);
});
process.on('SIGTERM', async () => {
    console.log(JSON.stringify({ calls, failures }));
    await server.close({ force: true });
    process.exit(0);
});
