'use strict'
// The drain at SIGTERM (transports/drain.c), as Phoenix 1.7's socket drainer:
// with N sockets and --drain-batch-size b, the sockets are closed in
// ceil(N/b) batches spaced by --drain-interval-ms (close times measured
// here, on the client side), WebSockets with 1012 and no reason, a long-poll
// session ended (its waiting poll answered); new connections are refused
// from the first moment of the drain, and on a keep-alive connection opened
// before it a new WebSocket or long-poll session gets 503 and the connection
// closes; the process exits 0 after the last batch.  Also: --drain-timeout-ms cuts the drain short (the rest closes with
// 1001), a second SIGTERM stops at once, --drain-timeout-ms 0 is the old
// stop (1001 for all at once), SIGINT does not drain.

const test = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const http = require('node:http')
const { RawClient, TcpClient, freePort, startServer, waitHttp, withTimeout, sleep, waitFor } = require('./lib')

const T = { timeout: 40000 }

async function server (t, extra) {
  const port = await freePort()
  const srv = startServer(['--port', String(port), '--schedulers', '2', '--log-level', 'info', ...extra])
  t.after(() => { if (srv.proc.exitCode === null && srv.proc.signalCode === null) srv.proc.kill('SIGKILL') })
  await waitHttp(`http://127.0.0.1:${port}`)
  srv.port = port
  return srv
}

const SANITIZER = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/

// The server exited 0 without a sanitizer report.
async function exitedClean (srv, ms = 10000) {
  const { code, signal } = await withTimeout(srv.exited, ms, 'the server to exit')
  assert.equal(signal, null, srv.out())
  assert.equal(code, 0, srv.out())
  assert.doesNotMatch(srv.out(), SANITIZER)
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
  // Two keep-alive HTTP connections opened before the drain.
  const keep = []
  for (let i = 0; i < 2; i++) {
    const k = await TcpClient.connect(srv.port)
    k.write('GET /api/cluster HTTP/1.1\r\nHost: x\r\n\r\n')
    await k.until((d) => d.includes('"members"'), 5000, 'a keep-alive answer')
    k.data = Buffer.alloc(0)
    keep.push(k)
  }

  const t0 = Date.now()
  srv.proc.kill('SIGTERM')
  // New connections are refused from the start of the drain.
  await waitFor(() => refused(srv.port), 2000, 'new connections to be refused', 10)
  const refusedAt = Date.now()
  // On a connection still open: no new WebSocket, no new long-poll session
  // (503, and the connection closes: the client's retry goes elsewhere).
  keep[0].write('GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n' +
    'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  keep[1].write('GET /socket/longpoll?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n\r\n')
  for (const k of keep) {
    await k.waitEnd(5000)
    assert.match(k.data.toString('latin1'), /^HTTP\/1\.1 503 /, 'a new socket while draining')
  }

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

  await exitedClean(srv)
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
  await exitedClean(srv)
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
  await exitedClean(srv, 8000)
  assert.ok(Date.now() - t1 < 6000, 'long before the next batch would have come')
})

test('--drain-timeout-ms 0 (no drain) and SIGINT close every WebSocket at once with 1001', T, async (t) => {
  for (const [sig, extra] of [['SIGTERM', ['--drain-timeout-ms', '0']], ['SIGINT', []]]) {
    const srv = await server(t, ['--drain-batch-size', '1', '--drain-interval-ms', '5000', ...extra])
    const ws = await clients(srv.port, 3)
    srv.proc.kill(sig)
    const infos = await Promise.all(ws.map((c) => c.waitClose(5000)))
    assert.deepEqual(infos.map((i) => i.code), [1001, 1001, 1001], sig)
    await exitedClean(srv, 8000)
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

// ---------------------------------------------------------------------------
// A rolling restart of a 3-node cluster (`phx-chat cluster --nodes 3
// --one-port`: the nodes share one HTTP port with SO_REUSEPORT), under light
// load (24 clients of the official phoenix client in room:lobby, a broadcast
// every 250 ms through POST /api/broadcast): SIGTERM node 1's pid, wait for
// the command to start it again (it restarts a node that exits 0 at once)
// and for every client to be joined again, then node 2, then node 3.  A
// probe asks GET /api/cluster over new connections all along: in every
// round of it at least two nodes answer, and no request is lost.  The same
// with --drain-timeout-ms 0 (every socket of the node closed at once), and
// the peak reconnects per second (the most client reconnects within any
// 1000 ms) of both are compared and printed.  Steps are STEP_PAUSE apart,
// as an operator lets a node settle before the next.

const { spawn } = require('node:child_process')
const { Socket } = require('phoenix')
const WebSocket = require('ws')
const { PHX_BIN, listeners } = require('./lib')

const CLIENTS = 24
const BATCH = 4
const BATCH_INTERVAL = 1200 // > the 1000 ms window of the peak: one batch per window
const PROBE_TRIES = 20 // per round: two nodes up both answer but with p = 2^-19
const STEP_PAUSE = 1500 // between a node back and the next SIGTERM

function freeTcp (port) {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

async function freeRun (n, avoid) {
  for (let i = 0; i < 200; i++) {
    const p = 20000 + Math.floor(Math.random() * 30000)
    if (avoid >= p && avoid < p + n) continue
    let ok = true
    for (let k = 0; k < n && ok; k++) ok = await freeTcp(p + k)
    if (ok) return p
  }
  throw new Error(`no ${n} consecutive free ports`)
}

// GET /api/cluster over a new connection: the answering node's name; one
// retry on a connection error (counted).
async function probeOnce (port, stats) {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const r = await getFresh(port, '/api/cluster', 3000)
      if (r.status === 200) return JSON.parse(r.body).name
      stats.bad += 1
    } catch (_) {
      stats.errors += 1
    }
  }
  stats.lost += 1
  return null
}

function peakPerSecond (times) {
  const ts = [...times].sort((a, b) => a - b)
  let best = 0
  for (let i = 0, j = 0; i < ts.length; i++) {
    while (ts[i] - ts[j] >= 1000) j++
    best = Math.max(best, i - j + 1)
  }
  return best
}

async function rollingRestart (drainFlags) {
  const port = await freePort()
  const cport = await freeRun(3, port)
  const args = ['cluster', '--nodes', '3', '--one-port', '--port', String(port), '--cluster-port', String(cport),
    '--heartbeat-ms', '200', '--down-after-ms', '1000', '--schedulers', '1', '--log-level', 'info', ...drainFlags]
  const proc = spawn(PHX_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  let outBuf = ''
  const nodes = {} // name -> { pid, at }
  proc.stdout.on('data', (d) => {
    outBuf += d
    let i
    while ((i = outBuf.indexOf('\n')) >= 0) {
      const line = outBuf.slice(0, i)
      outBuf = outBuf.slice(i + 1)
      const m = line.match(/^(node\d)@127\.0\.0\.1 \S+ cluster \S+ pid (\d+)/)
      if (m) nodes[m[1]] = { pid: Number(m[2]), at: Date.now() }
    }
  })
  proc.stderr.on('data', (d) => { err += d })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  const sockets = []
  let probing = true
  let probeLoop = Promise.resolve()
  let broadcasting = null
  try {
    await waitFor(() => nodes.node1 && nodes.node2 && nodes.node3, 10000, 'the command to print the three nodes')
    const pids = () => Object.values(nodes).map((n) => n.pid)
    await waitFor(() => listeners(port, pids()).length === 3, 15000, `the three nodes to listen on ${port}`, 50)
    const stats = { rounds: 0, errors: 0, bad: 0, lost: 0, thin: [] }
    const seenAll = new Set()
    await waitFor(async () => {
      const name = await probeOnce(port, { errors: 0, bad: 0, lost: 0 })
      if (name) seenAll.add(name)
      return seenAll.size === 3
    }, 15000, 'the three nodes to answer', 10)

    // The clients (the official phoenix client, its default reconnect back-off).
    const opens = []
    let received = 0
    for (let i = 0; i < CLIENTS; i++) {
      const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, timeout: 5000 })
      let first = true
      socket.onOpen(() => { if (!first) opens.push(Date.now()); first = false })
      const channel = socket.channel('room:lobby', {})
      channel.on('new_msg', () => { received += 1 })
      socket.connect()
      await new Promise((resolve, reject) => {
        channel.join().receive('ok', resolve).receive('error', reject).receive('timeout', () => reject(new Error('join timeout')))
      })
      sockets.push({ socket, channel })
    }
    const allJoined = () => sockets.every(({ socket, channel }) => socket.isConnected() && channel.state === 'joined')

    // Light load, and the probe: every round, PROBE_TRIES new connections.
    broadcasting = setInterval(() => {
      getFresh(port, '/api/cluster', 2000).catch(() => {})
      fetch(`http://127.0.0.1:${port}/api/broadcast`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ topic: 'room:lobby', event: 'new_msg', payload: { body: 'tick' } })
      }).then((r) => r.text()).catch(() => {})
    }, 250)
    probeLoop = (async () => {
      while (probing) {
        const names = await Promise.all(Array.from({ length: PROBE_TRIES }, () => probeOnce(port, stats)))
        const distinct = new Set(names.filter(Boolean))
        stats.rounds += 1
        if (distinct.size < 2) stats.thin.push({ at: Date.now(), names: [...distinct] })
        await sleep(100)
      }
    })()

    const steps = []
    for (const name of ['node1', 'node2', 'node3']) {
      const old = nodes[name].pid
      const before = opens.length
      const t0 = Date.now()
      process.kill(old, 'SIGTERM')
      await waitFor(() => nodes[name].pid !== old, 30000, `${name} to be started again`, 20)
      const back = nodes[name]
      await waitFor(() => listeners(port, [back.pid]).length === 1, 15000, `the new ${name} to listen`, 20)
      await waitFor(allJoined, 15000, 'every client to be joined again', 20)
      // As an operator would: let the node settle (and the peak window pass)
      // before the next one.
      await sleep(STEP_PAUSE)
      const reopened = opens.slice(before)
      steps.push({
        name,
        reconnects: reopened.length,
        elsewhere: reopened.filter((t) => t < back.at).length,
        spanMs: reopened.length ? Math.max(...reopened) - Math.min(...reopened) : 0,
        stepMs: Date.now() - t0
      })
    }
    probing = false
    await probeLoop
    clearInterval(broadcasting)
    broadcasting = null
    assert.match(err, /node1@127\.0\.0\.1 \(pid \d+\) exited with status 0 .* restarting in 100 ms/)
    return { steps, peak: peakPerSecond(opens), reconnects: opens.length, received, stats, err }
  } finally {
    probing = false
    await probeLoop.catch(() => {})
    if (broadcasting) clearInterval(broadcasting)
    for (const { socket } of sockets) socket.disconnect()
    if (proc.exitCode === null) proc.kill('SIGTERM')
    const r = await Promise.race([exited, sleep(20000).then(() => null)])
    if (!r) proc.kill('SIGKILL')
    for (const { pid } of Object.values(nodes)) { try { process.kill(pid, 'SIGKILL') } catch (_) { /* gone */ } }
  }
}

test('rolling restart of a 3-node cluster: no node\'s service lost, reconnects spread by the drain', { timeout: 150000 }, async () => {
  const drained = await rollingRestart(['--drain-batch-size', String(BATCH), '--drain-interval-ms', String(BATCH_INTERVAL), '--drain-timeout-ms', '20000'])
  const cut = await rollingRestart(['--drain-timeout-ms', '0'])
  const show = (r) => `peak ${r.peak}/s, ${r.reconnects} reconnects, steps ${JSON.stringify(r.steps)}, probe ${JSON.stringify({ ...r.stats, thin: r.stats.thin.length })}, broadcasts received ${r.received}`
  console.log(`# with the drain (batches of ${BATCH} every ${BATCH_INTERVAL} ms): ${show(drained)}`)
  console.log(`# closed at once (--drain-timeout-ms 0): ${show(cut)}`)
  for (const r of [drained, cut]) {
    assert.doesNotMatch(r.err, SANITIZER)
    assert.deepEqual(r.stats.thin, [], 'in every probe round at least two nodes answered')
    assert.equal(r.stats.lost, 0, 'no probe request lost (one retry on a new connection)')
    assert.ok(r.stats.rounds >= 6, `probe rounds: ${r.stats.rounds}`)
    for (const s of r.steps) {
      assert.equal(s.elsewhere, s.reconnects, `${s.name}: every reconnect landed on another node, before it came back`)
    }
    assert.equal(r.steps.reduce((a, s) => a + s.reconnects, 0), r.reconnects)
    assert.ok(r.reconnects >= CLIENTS, `every client reconnected at least once (${r.reconnects})`)
  }
  assert.ok(drained.peak <= BATCH, `with the drain the peak is one batch: ${drained.peak}`)
  assert.ok(cut.peak > drained.peak, `closing at once peaks higher: ${cut.peak} vs ${drained.peak}`)
})
