'use strict'
// HTTPS and wss:// on the node (--https-port, --tls-cert, --tls-key) with a
// certificate this test makes with the openssl command:
//   - the official phoenix.js Socket over wss (its `transport` a `ws`
//     WebSocket that trusts the test's certificate): join room:lobby, a push
//     and its reply, a broadcast from another client and one from
//     POST /api/broadcast over https;
//   - a long-poll session over https with fetch, in a child node process
//     given the certificate as NODE_EXTRA_CA_CERTS (built-in fetch has no
//     per-request CA): open, join, poll, push; its new_msg reaches the wss
//     client and the plain ws:// one;
//   - bad input on the TLS port (plain HTTP, garbage, a client stopping in
//     the middle of its handshake): closed, the node keeps serving both ports;
//   - the flags: --https-port without a pair, a missing file, a key of
//     another certificate: exit 2 with a message on stderr;
//   - SIGTERM: exit 0, no sanitizer report.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const net = require('node:net')
const { execFileSync, spawnSync, spawn } = require('node:child_process')
const { Socket } = require('phoenix')
const { PHX_BIN, WebSocket, freePort, startServer, waitFor, withTimeout, uniq } = require('./lib')

const T = { timeout: 60000 }

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'phx-tls-'))
const CERT = path.join(dir, 'cert.pem')
const KEY = path.join(dir, 'key.pem')
const OTHER_KEY = path.join(dir, 'other.pem')
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
  '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  '-keyout', KEY, '-out', CERT], { stdio: 'ignore', timeout: 20000 })
execFileSync('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', OTHER_KEY],
  { stdio: 'ignore', timeout: 20000 })
const CA = fs.readFileSync(CERT)

// A `ws` WebSocket that trusts the test's certificate (phoenix.js calls
// new transport(url)); it offers ALPN http/1.1, as browsers do).
class TrustingWebSocket extends WebSocket {
  constructor (url, protocols) { super(url, protocols, { ca: CA, ALPNProtocols: ['http/1.1'] }) }
}

let srv = null
let httpPort = 0
let httpsPort = 0

test.before(async () => {
  httpPort = await freePort()
  httpsPort = await freePort()
  srv = startServer(['--port', String(httpPort), '--https-port', String(httpsPort), '--tls-cert', CERT,
    '--tls-key', KEY, '--log-level', 'info'])
  await waitFor(() => /listening on https:/.test(srv.out()) || srv.proc.exitCode !== null, 15000, 'the https listener')
  assert.match(srv.out(), new RegExp(`listening on https://127\\.0\\.0\\.1:${httpsPort}`), srv.out())
})

test.after(async () => {
  if (srv) {
    srv.proc.kill('SIGTERM')
    const r = await withTimeout(srv.exited, 10000, 'the server to exit after SIGTERM')
    fs.rmSync(dir, { recursive: true, force: true })
    assert.equal(r.code, 0, srv.out())
    assert.doesNotMatch(srv.out(), /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/)
  }
})

function pxSocket (t, base, transport) {
  const socket = new Socket(`${base}/socket`, { transport, timeout: 8000, reconnectAfterMs: () => 500 })
  t.after(() => { try { socket.disconnect() } catch (_) { /* down */ } })
  return socket
}

function open (socket) {
  return withTimeout(new Promise((resolve) => { socket.onOpen(resolve); socket.connect() }), 10000, 'the socket to open')
}

function joined (channel) {
  return withTimeout(new Promise((resolve, reject) => {
    channel.join().receive('ok', resolve).receive('error', (r) => reject(new Error(JSON.stringify(r))))
  }), 10000, `join ${channel.topic}`)
}

// The messages of event on channel, as they come.
function collect (channel, event) {
  const got = []
  channel.on(event, (p) => got.push(p))
  return got
}

// A long-poll session over https run by a child node process trusting the
// certificate through NODE_EXTRA_CA_CERTS: join room:lobby, a ping, then
// new_msg {body}; prints what it saw as JSON.
function longPollChild (body) {
  const script = `
    const base = process.argv[1], body = process.argv[2]
    const url = (token) => base + '/socket/longpoll?vsn=2.0.0' + (token ? '&token=' + encodeURIComponent(token) : '')
    const get = async (token) => (await fetch(url(token), { signal: AbortSignal.timeout(15000) })).json()
    const post = async (token, msg) => (await fetch(url(token), { method: 'POST', body: JSON.stringify(msg),
      headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(15000) })).json()
    ;(async () => {
      let r = await get(null)
      if (r.status !== 410) throw new Error('open: ' + JSON.stringify(r))
      let token = r.token
      const seen = []
      const poll = async () => { const p = await get(token); token = p.token || token; seen.push(...(p.messages || []).map((s) => JSON.parse(s))); return p }
      const until = async (pred) => { for (let i = 0; i < 20 && !seen.some(pred); i++) await poll(); return seen.find(pred) }
      await post(token, ['1', '1', 'room:lobby', 'phx_join', {}])
      const join = await until((m) => m[1] === '1' && m[3] === 'phx_reply')
      await post(token, ['1', '2', 'room:lobby', 'ping', { n: 7 }])
      const ping = await until((m) => m[1] === '2' && m[3] === 'phx_reply')
      await post(token, ['1', '3', 'room:lobby', 'new_msg', { body }])
      const mine = await until((m) => m[3] === 'new_msg' && m[4].body === body)
      console.log(JSON.stringify({ join, ping, mine }))
    })().catch((e) => { console.error(e && e.stack || e); process.exit(1) })`
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, `https://localhost:${httpsPort}`, body], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: CERT }, stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { err += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), 40000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      if (code !== 0) reject(new Error(`long-poll child exited ${code}: ${err}`))
      else resolve(JSON.parse(out))
    })
  })
}

test('phoenix.js over wss: join, push and reply, broadcasts; long polling over https with fetch', T, async (t) => {
  const wss = pxSocket(t, `wss://localhost:${httpsPort}`, TrustingWebSocket)
  const ws = pxSocket(t, `ws://127.0.0.1:${httpPort}`, WebSocket)
  await Promise.all([open(wss), open(ws)])
  assert.equal(wss.conn._socket.alpnProtocol, 'http/1.1')
  const a = wss.channel('room:lobby', {})
  const b = ws.channel('room:lobby', {})
  await Promise.all([joined(a), joined(b)])
  const aMsgs = collect(a, 'new_msg')
  const bMsgs = collect(b, 'new_msg')

  const reply = await withTimeout(new Promise((resolve) => a.push('ping', { x: 1 }).receive('ok', resolve)), 8000, 'ping reply')
  assert.deepEqual(reply, { x: 1 })

  const body = uniq('tls')
  a.push('new_msg', { body })
  await waitFor(() => aMsgs.some((m) => m.body === body) && bMsgs.some((m) => m.body === body), 8000, 'new_msg from wss on both sockets')

  // POST /api/broadcast over https (fetch trusting the certificate through a child's env is
  // below; here node's https module with the CA)
  const b2 = uniq('api')
  const status = await new Promise((resolve, reject) => {
    const req = require('node:https').request({
      host: '127.0.0.1', port: httpsPort, servername: 'localhost', path: '/api/broadcast', method: 'POST', ca: CA,
      headers: { 'content-type': 'application/json' }, timeout: 8000
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)) })
    req.on('error', reject)
    req.end(JSON.stringify({ topic: 'room:lobby', event: 'new_msg', payload: { body: b2 } }))
  })
  assert.ok(status >= 200 && status < 300, `POST /api/broadcast answered ${status}`)
  await waitFor(() => aMsgs.some((m) => m.body === b2) && bMsgs.some((m) => m.body === b2), 8000, 'the API broadcast')

  // long polling over https
  const lpBody = uniq('lp')
  const lp = await longPollChild(lpBody)
  assert.equal(lp.join[4].status, 'ok')
  assert.deepEqual(lp.ping[4], { status: 'ok', response: { n: 7 } })
  assert.equal(lp.mine[4].body, lpBody)
  await waitFor(() => aMsgs.some((m) => m.body === lpBody) && bMsgs.some((m) => m.body === lpBody), 8000, 'the long-poll new_msg on wss and ws')
})

// Resolves true once the server closed the connection (EOF or reset).
function closedByServer (sock, ms = 8000) {
  return withTimeout(new Promise((resolve) => {
    sock.on('close', () => resolve(true))
    sock.on('error', () => {})
    sock.resume()
  }), ms, 'the server to close the connection')
}

test('bad input on the TLS port: plain HTTP, garbage, a handshake cut short: closed, both ports still serve', T, async () => {
  const plain = net.connect(httpsPort, '127.0.0.1')
  plain.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  assert.equal(await closedByServer(plain), true)

  const junk = net.connect(httpsPort, '127.0.0.1')
  junk.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), Buffer.alloc(64, 0xab)]))
  assert.equal(await closedByServer(junk), true)

  // stops after half a ClientHello: closed by the handshake timeout (5 s)
  const half = net.connect(httpsPort, '127.0.0.1')
  half.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
  assert.equal(await closedByServer(half, 12000), true)

  const ws = new TrustingWebSocket(`wss://localhost:${httpsPort}/socket/websocket?vsn=2.0.0`)
  await withTimeout(new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject) }), 8000, 'wss open')
  ws.close()
  const r = await fetch(`http://127.0.0.1:${httpPort}/api/cluster`, { signal: AbortSignal.timeout(8000) })
  assert.equal(r.status, 200)
})

test('--https-port needs a readable, matching certificate and key: exit 2 with a message', T, () => {
  const run = (args) => spawnSync(PHX_BIN, ['--port', '1', ...args], { encoding: 'utf8', timeout: 10000 })
  const cases = [
    [['--https-port', '4443'], /--tls-cert/],
    [['--https-port', '4443', '--tls-cert', CERT], /--tls-key/],
    [['--tls-cert', CERT, '--tls-key', KEY], /--https-port/],
    [['--https-port', '4443', '--tls-cert', path.join(dir, 'missing.pem'), '--tls-key', KEY], /missing\.pem/],
    [['--https-port', '4443', '--tls-cert', KEY, '--tls-key', KEY], /certificate/],
    [['--https-port', '4443', '--tls-cert', CERT, '--tls-key', OTHER_KEY], /match|mismatch/],
    [['--https-port', 'x', '--tls-cert', CERT, '--tls-key', KEY], /--https-port/]
  ]
  for (const [args, re] of cases) {
    const r = run(args)
    assert.equal(r.status, 2, `${args.join(' ')} exited ${r.status}: ${r.stderr}`)
    assert.match(r.stderr, re, args.join(' '))
  }
})
