'use strict'
// The launcher (bin/launcher.c) as a user runs it: --help, bad flags,
// --mint-token, SIGTERM with open WebSockets (drained: close 1012, exit 0;
// drain.test.js has the batches) and a
// second instance on a busy port (exit 1).

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const {
  PHX_BIN, PORT, RawClient, freePort, startServer, waitHttp, waitFor, withTimeout, uniq, listeners
} = require('./lib')

const T = { timeout: 30000 }

function run (args, opts = {}) {
  return spawnSync(PHX_BIN, args, { encoding: 'utf8', timeout: 10000, ...opts })
}

test('--help prints the usage and exits 0', T, () => {
  const r = run(['--help'])
  assert.equal(r.status, 0, r.stderr)
  for (const flag of ['--port', '--bind', '--schedulers', '--log-level', '--check-origin', '--max-frame-size', '--secret-key-base', '--mint-token']) {
    assert.ok(r.stdout.includes(flag), `--help mentions ${flag}`)
  }
})

test('bad flags exit 2 with a message on stderr', T, () => {
  for (const args of [['--bogus'], ['--port'], ['--port', 'abc'], ['--port', '70000'], ['--port', '0'], ['--log-level', 'loud'], ['--schedulers', '0'], ['--max-frame-size', '0'], ['--max-frame-size', '2000000000'], ['--max-frame-size', '1k'], ['--max-messages-per-second', '-1'], ['--max-messages-per-second', '2000000'], ['--max-memory-mb', 'x'], ['extra']]) {
    const r = run(args)
    assert.equal(r.status, 2, `${args.join(' ')} exited ${r.status}: ${r.stderr}`)
    assert.ok(r.stderr.length > 0, `${args.join(' ')} explains itself on stderr`)
  }
})

test('--mint-token prints a token that opens room:user:ID on the running server', T, async (t) => {
  const user = uniq('mint')
  const r = run(['--mint-token', user])
  assert.equal(r.status, 0, r.stderr)
  const token = r.stdout.trim()
  assert.match(token, /^SFMyNTY\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/)
  const c = await RawClient.connect({ params: { token } })
  t.after(() => c.close())
  const own = await c.join(`room:user:${user}`)
  assert.equal(own.status, 'ok', own.reply.text)
  const other = await c.join(`room:user:${user}x`)
  assert.deepEqual(other.response, { reason: 'unauthorized' })
})

test('--mint-token with another salt or secret gives a token the server refuses', T, async () => {
  for (const extra of [['--salt', 'other salt'], ['--secret-key-base', 'x'.repeat(64)]]) {
    const r = run(['--mint-token', 'someone', ...extra])
    assert.equal(r.status, 0, r.stderr)
    await assert.rejects(RawClient.connect({ params: { token: r.stdout.trim() } }), (err) => err.statusCode === 403)
  }
})

test('SIGTERM drains open WebSockets (1012, one batch) and exits 0', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const srv = startServer(['--port', String(port), '--schedulers', '2'])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(base)
  const clients = []
  for (let i = 0; i < 3; i++) {
    const c = await RawClient.connect({ base: `ws://127.0.0.1:${port}` })
    await c.joinOk('room:lobby')
    clients.push(c)
  }
  srv.proc.kill('SIGTERM')
  for (const c of clients) {
    const info = await c.waitClose(8000)
    assert.equal(info.code, 1012, 'WebSockets are drained with 1012 (service restart)')
  }
  const { code, signal } = await withTimeout(srv.exited, 10000, 'the server to exit')
  assert.equal(signal, null, `exited on signal ${signal}; output:\n${srv.out()}`)
  assert.equal(code, 0, `exit code; output:\n${srv.out()}`)
  assert.match(srv.out(), /listening on http:\/\/127\.0\.0\.1:\d+/)
})

test('SIGINT stops an idle server with exit 0', T, async (t) => {
  const port = await freePort()
  const srv = startServer(['--port', String(port), '--schedulers', '1', '--log-level', 'warning'])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(`http://127.0.0.1:${port}`)
  srv.proc.kill('SIGINT')
  const { code } = await withTimeout(srv.exited, 10000, 'the server to exit')
  assert.equal(code, 0, srv.out())
})

test('a second instance on the port of the running server exits 1', T, async (t) => {
  const srv = startServer(['--port', String(PORT)])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  const { code } = await withTimeout(srv.exited, 10000, 'the second instance to exit')
  assert.equal(code, 1, srv.out())
  assert.match(srv.out(), /in use/i)
})

test('--check-origin refuses upgrades from other origins with 403', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const srv = startServer(['--port', String(port), '--schedulers', '1', '--check-origin', `http://good.example,${base}`])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(base)
  const WebSocket = require('ws')
  const status = (origin) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?vsn=2.0.0`, { origin, handshakeTimeout: 5000 })
    ws.once('open', () => { ws.terminate(); resolve(101) })
    ws.once('unexpected-response', (req, res) => { res.resume(); req.destroy(); resolve(res.statusCode) })
    ws.once('error', reject)
  })
  assert.equal(await status('http://good.example'), 101)
  assert.equal(await status(base), 101)
  assert.equal(await status('http://evil.example'), 403)
  srv.proc.kill('SIGTERM')
  assert.equal((await withTimeout(srv.exited, 10000, 'exit')).code, 0)
})

test('--max-messages-per-second: a client over it is closed with 1008', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const srv = startServer(['--port', String(port), '--schedulers', '1', '--max-messages-per-second', '5'])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(base)
  const a = await RawClient.connect({ base: `ws://127.0.0.1:${port}` })
  t.after(() => a.close())
  const stats = async () => (await fetch(`${base}/api/stats`)).json()
  assert.equal((await stats()).connections.websockets_open, 1)
  for (let i = 0; i < 40; i++) a.ws.send(JSON.stringify([null, String(i), 'phoenix', 'heartbeat', {}]))
  assert.equal((await a.waitClose(5000)).code, 1008)
  // GET /api/stats counts it, and the WebSocket is gone.
  await waitFor(async () => (await stats()).closed.flood_1008 === 1, 5000, 'flood_1008 in /api/stats')
  const s = await stats()
  assert.equal(s.connections.websockets_open, 0)
  assert.ok(s.rss > 1e6, `rss ${s.rss}`)
  srv.proc.kill('SIGTERM')
  assert.equal((await withTimeout(srv.exited, 10000, 'exit')).code, 0)
})

test('--max-memory-mb: over the budget a new long-poll session gets 503, plain HTTP works', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const srv = startServer(['--port', String(port), '--schedulers', '1', '--max-memory-mb', '1'])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(base)
  const r = await fetch(`${base}/socket/longpoll?vsn=2.0.0`)
  assert.equal(r.status, 503)
  assert.equal(r.headers.get('retry-after'), '5')
  assert.equal((await fetch(`${base}/`)).status, 200)
  srv.proc.kill('SIGTERM')
  assert.equal((await withTimeout(srv.exited, 10000, 'exit')).code, 0)
})

test('--websocket-timeout-ms: a silent WebSocket is closed after it, one that sends heartbeats stays', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const srv = startServer(['--port', String(port), '--schedulers', '1', '--websocket-timeout-ms', '1500'])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(base)
  const wsBase = `ws://127.0.0.1:${port}`
  const silent = await RawClient.connect({ base: wsBase })
  const beating = await RawClient.connect({ base: wsBase })
  t.after(() => { silent.close(); beating.close() })
  let n = 0
  const beat = setInterval(() => beating.ws.send(JSON.stringify([null, String(++n), 'phoenix', 'heartbeat', {}])), 300)
  t.after(() => clearInterval(beat))
  const t0 = Date.now()
  const closed = await silent.waitClose(10000)
  const after = Date.now() - t0
  assert.equal(closed.code, 1000)
  assert.ok(after >= 1000 && after < 6000, `closed after ${after} ms, with a 1500 ms timeout`)
  // The default (60 s) would not have closed it: the flag took effect, and
  // the one that speaks is still open.
  assert.equal(beating.ws.readyState, 1, 'the WebSocket that sends heartbeats is open')
  const r = run(['--websocket-timeout-ms', '999'])
  assert.equal(r.status, 2, r.stderr)
  assert.match(r.stderr, /websocket-timeout-ms/)
  srv.proc.kill('SIGTERM')
  assert.equal((await withTimeout(srv.exited, 10000, 'exit')).code, 0)
})

test('--max-frame-size sets the largest message: one byte more closes with 1009', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const srv = startServer(['--port', String(port), '--schedulers', '1', '--max-frame-size', '1000'])
  t.after(() => { if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(base)
  const wsBase = `ws://127.0.0.1:${port}`
  // A ping of exactly 1000 bytes is answered.
  const a = await RawClient.connect({ base: wsBase })
  t.after(() => a.close())
  const { joinRef } = await a.joinOk('room:lobby')
  const frame = (pad) => JSON.stringify([joinRef, '9', 'room:lobby', 'ping', { pad }])
  const text = frame('p'.repeat(1000 - frame('').length))
  assert.equal(text.length, 1000)
  a.ws.send(text)
  const reply = await a.next((m) => m.ref === '9', 3000, 'the reply to the 1000-byte ping')
  assert.equal(reply.payload.status, 'ok')
  // 1001 bytes: 1009.
  a.ws.send(frame('p'.repeat(1001 - frame('').length)))
  assert.equal((await a.waitClose(5000)).code, 1009)
  srv.proc.kill('SIGTERM')
  assert.equal((await withTimeout(srv.exited, 10000, 'exit')).code, 0)
})

test('cluster flags: bad combinations exit 2 with a clear message', T, () => {
  const cases = [
    [['--cluster-listen', 'tcp://127.0.0.1:5999'], /need --name/],
    [['--pubsub', 'redis://127.0.0.1:6379'], /need --name/],
    [['--name', 'a@127.0.0.1'], /--cluster-listen URL .* or --pubsub/],
    [['--name', 'a@127.0.0.1', '--peers', 'tcp://127.0.0.1:5999'], /--cluster-listen URL/],
    [['--name', 'a@127.0.0.1', '--pubsub', 'redis://127.0.0.1:6379', '--cluster-listen', 'tcp://127.0.0.1:5999'], /--pubsub .* goes without/],
    [['--name', 'a@127.0.0.1', '--pubsub', 'redis://127.0.0.1:6379', '--seed', 'tcp://127.0.0.1:5999'], /--pubsub .* goes without/],
    [['--name', 'bad name', '--cluster-listen', 'tcp://127.0.0.1:5999'], /bad --name/],
    [['--name', 'x'.repeat(64), '--cluster-listen', 'tcp://127.0.0.1:5999'], /bad --name/],
    [['--name', 'a', '--cluster-listen', '127.0.0.1:5999'], /bad --cluster-listen/],
    [['--name', 'a', '--cluster-listen', 'tcp://127.0.0.1:1', '--peers', 'tcp://x:1,nope'], /bad --peers/],
    [['--name', 'a', '--pubsub', 'http://127.0.0.1:6379'], /bad --pubsub/],
    [['--name', 'a', '--cluster-listen', 'tcp://127.0.0.1:1', '--heartbeat-ms', '0'], /bad --heartbeat-ms/],
    [['--name', 'a', '--cluster-listen', 'tcp://127.0.0.1:1', '--heartbeat-ms', '500', '--down-after-ms', '900'], /--down-after-ms must be longer/],
    [['cluster'], /--nodes N is required/],
    [['cluster', '--nodes', '0'], /bad --nodes/],
    [['cluster', '--nodes', '65'], /bad --nodes/],
    [['cluster', '--nodes', '2', '--name', 'x'], /--name is set by the cluster command/],
    [['cluster', '--nodes', '2', '--reuse-port'], /--reuse-port is set by the cluster command/],
    [['cluster', '--nodes', '2', '--port', '4000', '--cluster-port', '4001'], /overlap/],
    [['cluster', '--nodes', '2', '--port', '65535'], /past 65535/]
  ]
  for (const [args, re] of cases) {
    const r = run(args)
    assert.equal(r.status, 2, `${args.join(' ')} exited ${r.status}: ${r.stderr}`)
    assert.match(r.stderr, re, args.join(' '))
  }
})

test('--help documents the cluster flags; cluster --help the cluster command', T, () => {
  const r = run(['--help'])
  assert.equal(r.status, 0, r.stderr)
  for (const flag of ['--name', '--cluster-listen', '--peers', '--seed', '--pubsub', '--heartbeat-ms', '--down-after-ms', '--reuse-port', 'cluster --nodes']) {
    assert.ok(r.stdout.includes(flag), `--help mentions ${flag}`)
  }
  const c = run(['cluster', '--help'])
  assert.equal(c.status, 0, c.stderr)
  for (const flag of ['--nodes', '--port', '--one-port', '--cluster-port', '--pubsub']) {
    assert.ok(c.stdout.includes(flag), `cluster --help mentions ${flag}`)
  }
})

test('cluster: a bad node option makes the nodes exit 2, and the command with them', T, () => {
  const r = run(['cluster', '--nodes', '2', '--port', '1', '--cluster-port', '3', '--bogus', 'x'], { timeout: 15000 })
  assert.equal(r.status, 2, `exited ${r.status}: ${r.stderr}`)
  assert.match(r.stderr, /unknown option '--bogus'/)
  assert.match(r.stderr, /a bad node option; stopping/)
})

test('GET /api/cluster on a node that is alone: nonode@nohost, no members', T, async () => {
  const res = await fetch(`http://127.0.0.1:${PORT}/api/cluster`, { signal: AbortSignal.timeout(5000) })
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), { name: 'nonode@nohost', members: [] })
})

test('--reuse-port: two processes share one port; when one stops the other still serves', T, async (t) => {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const args = ['--port', String(port), '--schedulers', '1', '--log-level', 'warning', '--reuse-port']
  const a = startServer(args)
  t.after(() => { if (a.proc.exitCode === null) a.proc.kill('SIGKILL') })
  await waitHttp(base)
  const b = startServer(args)
  t.after(() => { if (b.proc.exitCode === null) b.proc.kill('SIGKILL') })
  await waitFor(() => listeners(port, [a.proc.pid, b.proc.pid]).length === 2, 10000,
    `both processes to listen on ${port} (exit codes ${a.proc.exitCode}, ${b.proc.exitCode})`, 50)
  // Without --reuse-port a third one is refused.
  const c = startServer(['--port', String(port), '--schedulers', '1'])
  t.after(() => { if (c.proc.exitCode === null) c.proc.kill('SIGKILL') })
  assert.equal((await withTimeout(c.exited, 10000, 'the third instance to exit')).code, 1, c.out())
  a.proc.kill('SIGTERM')
  assert.equal((await withTimeout(a.exited, 10000, 'the first to exit')).code, 0, a.out())
  for (let i = 0; i < 5; i++) {
    const r = await fetch(base + '/api/cluster', { signal: AbortSignal.timeout(5000) })
    assert.equal(r.status, 200)
    await r.text()
  }
  assert.deepEqual(listeners(port, [b.proc.pid]), [b.proc.pid])
  b.proc.kill('SIGTERM')
  assert.equal((await withTimeout(b.exited, 10000, 'the second to exit')).code, 0, b.out())
})
