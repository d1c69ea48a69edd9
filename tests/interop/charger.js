// An independent OCPP-J charging station (ocpp-rpc, strict schema mode) talking to labkit's CSMS.
// usage: node charger.js ws://HOST:PORT/ ocpp1.6|ocpp2.0.1 IDENTITY [PASSWORD]
// Prints one JSON line {ok, failures, results} and exits 0 when every call got a valid reply.
'use strict';
const { RPCClient } = require('ocpp-rpc');

const [url, protocol, identity, password] = process.argv.slice(2);
const now = () => new Date().toISOString();
const failures = [];
const results = {};

async function main() {
    const cli = new RPCClient({ endpoint: url.replace(/\/$/, ''), identity, protocols: [protocol],
        strictMode: true, password, reconnect: false, callTimeoutMs: 10000 });
    cli.on('strictValidationFailure', (e) => failures.push({ strict: String(e.error && e.error.message) }));
    await cli.connect();
    const call = async (method, params) => {
        try {
            results[method] = await cli.call(method, params);
        } catch (err) {
            failures.push({ method, error: String(err && (err.rpcErrorCode || err.message)) });
        }
    };
    if (protocol === 'ocpp1.6') {
        await call('BootNotification', { chargePointVendor: 'ocpp-rpc', chargePointModel: 'interop' });
        await call('Heartbeat', {});
        await call('StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Available' });
        await call('Authorize', { idTag: 'TAG1' });
        await call('StartTransaction', { connectorId: 1, idTag: 'TAG1', meterStart: 100, timestamp: now() });
        const txId = results.StartTransaction ? results.StartTransaction.transactionId : 0;
        await call('MeterValues', { connectorId: 1, transactionId: txId, meterValue: [{ timestamp: now(),
            sampledValue: [{ value: '150.0', measurand: 'Energy.Active.Import.Register', unit: 'Wh' },
                           { value: '7400.0', measurand: 'Power.Active.Import', unit: 'W' },
                           { value: '55.0', measurand: 'SoC', unit: 'Percent', location: 'EV' }] }] });
        await call('StopTransaction', { meterStop: 200, timestamp: now(), transactionId: txId, idTag: 'TAG1' });
        await call('DataTransfer', { vendorId: 'labkit', messageId: 'm', data: 'hello' });
        await call('FirmwareStatusNotification', { status: 'Idle' });
        await call('DiagnosticsStatusNotification', { status: 'Idle' });
    } else {
        await call('BootNotification', { reason: 'PowerUp', chargingStation: { model: 'interop', vendorName: 'ocpp-rpc' } });
        await call('Heartbeat', {});
        await call('StatusNotification', { timestamp: now(), connectorStatus: 'Available', evseId: 1, connectorId: 1 });
        await call('Authorize', { idToken: { idToken: 'TAG1', type: 'ISO14443' } });
        const tx = { transactionId: 'interop-1' };
        await call('TransactionEvent', { eventType: 'Started', timestamp: now(), triggerReason: 'Authorized', seqNo: 0,
            transactionInfo: tx, idToken: { idToken: 'TAG1', type: 'ISO14443' }, evse: { id: 1, connectorId: 1 } });
        await call('TransactionEvent', { eventType: 'Updated', timestamp: now(), triggerReason: 'MeterValuePeriodic',
            seqNo: 1, transactionInfo: tx, meterValue: [{ timestamp: now(), sampledValue: [
                { value: 150, measurand: 'Energy.Active.Import.Register', unitOfMeasure: { unit: 'Wh' } }] }] });
        await call('TransactionEvent', { eventType: 'Ended', timestamp: now(), triggerReason: 'StopAuthorized', seqNo: 2,
            transactionInfo: { transactionId: 'interop-1', stoppedReason: 'Local' } });
        await call('MeterValues', { evseId: 1, meterValue: [{ timestamp: now(), sampledValue: [{ value: 1 }] }] });
        await call('DataTransfer', { vendorId: 'labkit', messageId: 'm', data: 'hello' });
        await call('FirmwareStatusNotification', { status: 'Idle' });
        await call('LogStatusNotification', { status: 'Idle' });
        await call('SecurityEventNotification', { type: 'StartupOfTheDevice', timestamp: now() });
    }
    // an action the CSMS does not know: sent raw (strict mode would refuse to send it)
    const reply = new Promise((resolve) => cli.on('message', ({ message, outbound }) => {
        if (!outbound && String(message).includes('"interop-unknown"')) resolve(JSON.parse(String(message)));
    }));
    cli.sendRaw(JSON.stringify([2, 'interop-unknown', 'NoSuchAction', {}]));
    const unknown = await Promise.race([reply, new Promise((r) => setTimeout(() => r(null), 5000))]);
    if (!unknown || unknown[0] !== 4 || unknown[2] !== 'NotImplemented') {
        failures.push({ method: 'NoSuchAction', reply: unknown });
    }
    await cli.close();
    const ok = Object.keys(results).length;
    console.log(JSON.stringify({ ok, failures, results }));
    process.exit(failures.length ? 1 : 0);
}

main().catch((err) => { console.log(JSON.stringify({ ok: 0, failures: [String(err)] })); process.exit(2); });
