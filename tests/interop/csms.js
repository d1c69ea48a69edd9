// An independent OCPP-J CSMS (ocpp-rpc, strict schema mode) for labkit's fleet.
// usage: node csms.js PORT [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--password-file FILE]
//   without options: ws://, security profile 0. --password-file (its first line; never on the command line):
//   HTTP Basic auth, profile 1 (ws://) or 2 (with --tls-cert/--tls-key: wss://). --client-ca: profile 3, a
//   client certificate from that CA is required in the TLS handshake and its CN must be the station identity
//   (else HTTP 403). Listens on 127.0.0.1 only; prints "listening PORT ws|wss".
// On SIGTERM prints one JSON line {calls, failures, sessions, refused, tlsErrors} and exits 0: sessions are
// the accepted connections (identity, subprotocol and, over TLS, version, cipher and the client
// certificate's CN), refused the upgrades it refused (identity, HTTP status, reason), tlsErrors the TLS
// handshakes that failed (the error code of Node's TLS layer).
'use strict';
const fs = require('fs');
const https = require('https');
const { timingSafeEqual } = require('crypto');
const { RPCServer, createRPCError } = require('ocpp-rpc');

function parseArgs(argv) {
    const positional = [];
    const opts = {};
    const known = new Set(['--tls-cert', '--tls-key', '--client-ca', '--password-file']);
    for (let i = 0; i < argv.length; i++) {
        if (argv[i].startsWith('--')) {
            if (!known.has(argv[i]) || i + 1 >= argv.length) throw new Error(`bad option ${argv[i]}`);
            opts[argv[i].slice(2)] = argv[++i];
        } else {
            positional.push(argv[i]);
        }
    }
    return { port: Number(positional[0] || 0), opts };
}

const { port, opts } = parseArgs(process.argv.slice(2));
const tls = opts['tls-cert'] !== undefined;
if (tls !== (opts['tls-key'] !== undefined)) throw new Error('--tls-cert and --tls-key go together');
if (opts['client-ca'] !== undefined && !tls) throw new Error('--client-ca needs --tls-cert/--tls-key');
if (opts['client-ca'] !== undefined && opts['password-file'] !== undefined) {
    throw new Error('profile 3 (--client-ca) takes no password');
}
const password = opts['password-file'] !== undefined
    ? Buffer.from(fs.readFileSync(opts['password-file'], 'utf8').split(/\r?\n/)[0], 'utf8') : null;
const profile = opts['client-ca'] !== undefined ? 3 : tls ? 2 : password ? 1 : 0;
if (profile === 2 && !password) throw new Error('profile 2 (--tls-cert without --client-ca) needs --password-file');

const calls = {};
const failures = [];
const sessions = [];
const refused = [];
const tlsErrors = [];
let txId = 0;
const now = () => new Date().toISOString();

const server = new RPCServer({ protocols: ['ocpp1.6', 'ocpp2.0.1'], strictMode: true });

server.auth((accept, reject, handshake) => {
    const socket = handshake.request.socket;
    const refuse = (status, reason) => {
        refused.push({ identity: handshake.identity, status, reason });
        reject(status, reason);
    };
    const session = { identity: handshake.identity };
    if (profile >= 2) {
        if (typeof socket.getProtocol !== 'function') return refuse(400, 'not over TLS');
        session.tls = socket.getProtocol();
        session.cipher = (socket.getCipher() || {}).name;
    }
    if (profile === 3) {
        // rejectUnauthorized already refused a missing or untrusted certificate in the TLS handshake
        const cert = socket.getPeerCertificate() || {};
        const cn = cert.subject && cert.subject.CN;
        session.clientCN = cn;
        session.clientAuthorized = socket.authorized;
        if (!socket.authorized) return refuse(403, `client certificate not trusted: ${socket.authorizationError}`);
        if (cn !== handshake.identity) {
            return refuse(403, `the client certificate is for '${cn}', not for '${handshake.identity}'`);
        }
    }
    if (password) {
        const given = handshake.password;
        if (!given || given.length !== password.length || !timingSafeEqual(given, password)) {
            return refuse(401, 'wrong or missing password');
        }
    }
    accept(session);
});

server.on('client', (client) => {
    sessions.push({ ...client.session, protocol: client.protocol });
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

let httpsServer = null;

async function listen() {
    if (!tls) {
        const http = await server.listen(port, '127.0.0.1');
        return http.address().port;
    }
    const options = {
        cert: fs.readFileSync(opts['tls-cert']),
        key: fs.readFileSync(opts['tls-key']),
        minVersion: 'TLSv1.2',  // OCPP allows nothing older (A00.FR.313)
    };
    if (profile === 3) {
        Object.assign(options, { ca: fs.readFileSync(opts['client-ca']), requestCert: true, rejectUnauthorized: true });
    }
    httpsServer = https.createServer(options, (req, res) => { res.writeHead(426); res.end('WebSocket only\n'); });
    httpsServer.on('upgrade', server.handleUpgrade);
    httpsServer.on('tlsClientError', (err) => tlsErrors.push(String(err.code || err.message)));
    await new Promise((resolve, reject) => {
        httpsServer.once('error', reject);
        httpsServer.listen(port, '127.0.0.1', resolve);
    });
    return httpsServer.address().port;
}

listen().then((p) => console.log(`listening ${p} ${tls ? 'wss' : 'ws'}`));

process.on('SIGTERM', async () => {
    console.log(JSON.stringify({ calls, failures, sessions, refused, tlsErrors }));
    await server.close({ force: true });
    if (httpsServer) httpsServer.close();
    process.exit(0);
});
