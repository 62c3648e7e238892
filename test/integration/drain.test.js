'use strict'
// The drain at SIGTERM (transports/drain.c), as Phoenix 1.7's socket drainer:
// with N sockets and --drain-batch-size b, the sockets are closed in
// ceil(N/b) batches spaced by --drain-interval-ms (close times measured
// here, on the client side), WebSockets with 1012 and no reason, a long-poll
// session ended (its waiting poll answered); new connections are refused
// from the first moment of the drain; the process exits 0 after the last
// batch.  Also: --drain-timeout-ms cuts the drain short (the rest closes with
// 1001), a second SIGTERM stops at once, --drain-timeout-ms 0 is the old
// stop (1001 for all at once), SIGINT does not drain.

const test = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const http = require('node:http')
const { RawClient, freePort, startServer, waitHttp, withTimeout, sleep, waitFor } = require('./lib')

const T = { timeout: 40000 }

async function server (t, extra) {
  const port = await freePort()
  const srv = startServer(['--port', String(port), '--schedulers', '2', '--log-level', 'info', ...extra])
  t.after(() => { if (srv.proc.exitCode === null && srv.proc.signalCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(`http://127.0.0.1:${port}`)
  srv.port = port
  return srv
}

async function clients (port, n) {
  const cs = []
  for (let i = 0; i < n; i++) {
    const c = await RawClient.connect({ base: `ws://127.0.0.1:${port}` })
    await c.joinOk('room:lobby')
    c.closedAt = null
    c.ws.on('close', () => { c.closedAt = Date.now() })
    cs.push(c)
  }
  return cs
}

// GET on a new connection; resolves { status, body, at } (at: when the answer ended).
function getFresh (port, path, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers, at: Date.now() }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

// Whether a TCP connection to port is refused.
function refused (port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', (e) => resolve(e.code === 'ECONNREFUSED'))
  })
}

// Groups sorted times into batches: a gap over `gap` ms starts a new one.
function batches (times, gap) {
  const out = []
  for (const t of [...times].sort((a, b) => a - b)) {
    if (out.length && t - out[out.length - 1].last <= gap) {
      const b = out[out.length - 1]
      b.n += 1
      b.last = t
    } else out.push({ first: t, last: t, n: 1 })
  }
  return out
}

test('SIGTERM: ceil(N/b) batches spaced by the interval, 1012, new connections refused, exit 0 after the last batch', T, async (t) => {
  const B = 3
  const INTERVAL = 800
  const srv = await server(t, ['--drain-batch-size', String(B), '--drain-interval-ms', String(INTERVAL),
    '--drain-timeout-ms', '20000', '--longpoll-window-ms', '15000'])
  const ws = await clients(srv.port, 7)
  // One long-poll session, with a poll waiting (answered when it is drained).
  const open = await getFresh(srv.port, '/socket/longpoll?vsn=2.0.0')
  const token = JSON.parse(open.body).token
  assert.equal(JSON.parse(open.body).status, 410, open.body)
  const poll = getFresh(srv.port, `/socket/longpoll?vsn=2.0.0&token=${encodeURIComponent(token)}`, 20000)
  await sleep(200) // the poll is parked
  const N = ws.length + 1

  const t0 = Date.now()
  srv.proc.kill('SIGTERM')
  // New connections are refused from the start of the drain.
  await waitFor(() => refused(srv.port), 2000, 'new connections to be refused', 10)
  const refusedAt = Date.now()

  const infos = await Promise.all(ws.map((c) => c.waitClose(15000)))
  for (const info of infos) assert.deepEqual(info, { code: 1012, reason: '' }, 'drained: 1012 (Service Restart), no reason')
  const p = await poll
  assert.equal(p.status, 200)
  assert.equal(JSON.parse(p.body).status, 204, `the waiting poll of the drained session: ${p.body}`)
  assert.equal(p.headers.connection, 'close', 'no keep-alive while draining')

  const times = ws.map((c) => c.closedAt).concat([p.at])
  const got = batches(times, INTERVAL / 2)
  const desc = got.map((b) => `${b.n}@+${b.first - t0}ms`).join(' ')
  assert.equal(got.length, Math.ceil(N / B), `batches: ${desc}`)
  assert.deepEqual(got.map((b) => b.n), [3, 3, 2], `batch sizes: ${desc}`)
  for (let i = 1; i < got.length; i++) {
    const gap = got[i].first - got[i - 1].first
    assert.ok(gap >= INTERVAL - 60 && gap <= INTERVAL + 700, `batch ${i + 1} came ${gap} ms after batch ${i} (interval ${INTERVAL}): ${desc}`)
  }
  assert.ok(refusedAt < got[1].first, 'refused before the second batch')
  assert.ok(await refused(srv.port), 'still refused after the last batch')

  const { code, signal } = await withTimeout(srv.exited, 10000, 'the server to exit')
  assert.equal(signal, null)
  assert.equal(code, 0, srv.out())
  assert.match(srv.out(), /draining 3 of 8 socket\(s\) - batch 1 of 3/)
  assert.match(srv.out(), /draining 2 of 8 socket\(s\) - batch 3 of 3/)
})

test('--drain-timeout-ms cuts the drain short: the rest closes with 1001', T, async (t) => {
  const srv = await server(t, ['--drain-batch-size', '1', '--drain-interval-ms', '700', '--drain-timeout-ms', '1000'])
  const ws = await clients(srv.port, 4)
  const t0 = Date.now()
  srv.proc.kill('SIGTERM')
  const infos = await Promise.all(ws.map((c) => c.waitClose(10000)))
  const codes = infos.map((i) => i.code).sort()
  assert.deepEqual(codes, [1001, 1001, 1012, 1012], `two batches within 1000 ms, then the stop: ${JSON.stringify(infos)}`)
  const { code } = await withTimeout(srv.exited, 10000, 'the server to exit')
  assert.equal(code, 0, srv.out())
  assert.ok(Date.now() - t0 < 8000)
  assert.match(srv.out(), /2 socket\(s\) left after 1000 ms/)
})

test('a second SIGTERM during the drain stops at once (1001)', T, async (t) => {
  const srv = await server(t, ['--drain-batch-size', '1', '--drain-interval-ms', '10000'])
  const ws = await clients(srv.port, 3)
  srv.proc.kill('SIGTERM')
  await waitFor(() => ws.some((c) => c.closeInfo), 5000, 'the first batch')
  const t1 = Date.now()
  srv.proc.kill('SIGTERM')
  const infos = await Promise.all(ws.map((c) => c.waitClose(5000)))
  assert.deepEqual(infos.map((i) => i.code).sort(), [1001, 1001, 1012])
  const { code } = await withTimeout(srv.exited, 8000, 'the server to exit')
  assert.equal(code, 0, srv.out())
  assert.ok(Date.now() - t1 < 6000, 'long before the next batch would have come')
})

test('--drain-timeout-ms 0 (no drain) and SIGINT close every WebSocket at once with 1001', T, async (t) => {
  for (const [sig, extra] of [['SIGTERM', ['--drain-timeout-ms', '0']], ['SIGINT', []]]) {
    const srv = await server(t, ['--drain-batch-size', '1', '--drain-interval-ms', '5000', ...extra])
    const ws = await clients(srv.port, 3)
    srv.proc.kill(sig)
    const infos = await Promise.all(ws.map((c) => c.waitClose(5000)))
    assert.deepEqual(infos.map((i) => i.code), [1001, 1001, 1001], sig)
    const { code } = await withTimeout(srv.exited, 8000, 'the server to exit')
    assert.equal(code, 0, srv.out())
  }
})

test('bad drain flags exit 2', T, () => {
  const { spawnSync } = require('node:child_process')
  const { PHX_BIN } = require('./lib')
  for (const args of [['--drain-batch-size', '0'], ['--drain-interval-ms', '-1'], ['--drain-timeout-ms', 'x']]) {
    const r = spawnSync(PHX_BIN, args, { encoding: 'utf8', timeout: 10000 })
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`)
  }
})
