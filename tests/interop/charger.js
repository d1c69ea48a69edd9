// An independent OCPP-J charging station (ocpp-rpc, strict schema mode) talking to labkit's CSMS.
// usage: node charger.js URL ocpp1.6|ocpp2.0.1 IDENTITY [--ca FILE] [--cert FILE --key FILE]
//                        [--password-file FILE] [--tls-version 1.2|1.3]
//   URL ws://HOST:PORT/ or wss://HOST:PORT/ (security profiles 2 and 3: TLS; --ca: the CA the CSMS's
//   certificate must chain to, --cert/--key: a client certificate for profile 3). The HTTP Basic auth
//   password (profiles 1 and 2) comes from --password-file (its first line) or the environment variable
//   CHARGER_PASSWORD, never from the command line.
// Prints one JSON line {ok, failures, results, tls} and exits 0 when every call got a valid reply; when the
// connection is refused, {ok: 0, failures, refused: {status, body}} (status: the HTTP status of the upgrade
// or the TLS error code) and exit status 2.
'use strict';
const fs = require('fs');
const { RPCClient } = require('ocpp-rpc');

function parseArgs(argv) {
    const positional = [];
    const opts = {};
    const known = new Set(['--ca', '--cert', '--key', '--password-file', '--tls-version']);
    for (let i = 0; i < argv.length; i++) {
        if (argv[i].startsWith('--')) {
            if (!known.has(argv[i]) || i + 1 >= argv.length) throw new Error(`bad option ${argv[i]}`);
            opts[argv[i].slice(2)] = argv[++i];
        } else {
            positional.push(argv[i]);
        }
    }
    if (positional.length !== 3) throw new Error('usage: charger.js URL PROTOCOL IDENTITY [options]');
    return { positional, opts };
}

const { positional: [url, protocol, identity], opts } = parseArgs(process.argv.slice(2));
const password = opts['password-file'] !== undefined
    ? fs.readFileSync(opts['password-file'], 'utf8').split(/\r?\n/)[0]
    : process.env.CHARGER_PASSWORD;
const wsOpts = {};
if (url.startsWith('wss://')) {
    wsOpts.minVersion = 'TLSv1.2';  // OCPP allows nothing older (A00.FR.313)
    if (opts['tls-version']) wsOpts.minVersion = wsOpts.maxVersion = `TLSv${opts['tls-version']}`;
    if (opts.ca) wsOpts.ca = fs.readFileSync(opts.ca);
    if (opts.cert) wsOpts.cert = fs.readFileSync(opts.cert);
    if (opts.key) wsOpts.key = fs.readFileSync(opts.key);
} else if (opts.ca || opts.cert || opts.key || opts['tls-version']) {
    throw new Error('TLS options need a wss:// URL');
}
const now = () => new Date().toISOString();
const failures = [];
const results = {};

// The TLS connection as this side saw it: version, cipher, the CSMS's certificate.
function tlsInfo(socket) {
    if (!socket || typeof socket.getProtocol !== 'function') return null;
    const peer = socket.getPeerCertificate() || {};
    return { version: socket.getProtocol(), cipher: (socket.getCipher() || {}).name, authorized: socket.authorized,
        serverCN: peer.subject && peer.subject.CN, serverAltNames: peer.subjectaltname };
}

// A refused upgrade: the HTTP status and the start of the body the CSMS sent with it.
async function refusal(err) {
    if (!err || !err.response) return { status: String(err && (err.code || err.message)), body: '' };
    const body = await new Promise((resolve) => {
        let text = '';
        const done = () => resolve(text.slice(0, 500));
        err.response.setEncoding('utf8');
        err.response.on('data', (d) => { text += d; });
        err.response.on('end', done);
        err.response.on('error', done);
        setTimeout(done, 2000);
    });
    return { status: err.code, body };
}

async function main() {
    const cli = new RPCClient({ endpoint: url.replace(/\/$/, ''), identity, protocols: [protocol],
        strictMode: true, password, wsOpts, reconnect: false, callTimeoutMs: 10000 });
    cli.on('strictValidationFailure', (e) => failures.push({ strict: String(e.error && e.error.message) }));
    let opened;
    try {
        opened = await cli.connect();
    } catch (err) {
        const refused = await refusal(err);
        console.log(JSON.stringify({ ok: 0, failures: [String(err && err.message)], refused }));
        process.exit(2);
    }
    const tls = tlsInfo(opened && opened.response && opened.response.socket);
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
    console.log(JSON.stringify({ ok, failures, results, tls }));
    process.exit(failures.length ? 1 : 0);
}

main().catch((err) => { console.log(JSON.stringify({ ok: 0, failures: [String(err)] })); process.exit(2); });
