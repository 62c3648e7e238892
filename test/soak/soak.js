'use strict'
// soak.js: the soak harness of phx-c (`make soak`; not in CI).
//
//   node test/soak/soak.js [BUILD_DIR]       (SOAK_MINUTES=60 by default)
//
// Starts `BUILD_DIR/phx-chat cluster --nodes 3` on free ports (node i on its
// own HTTP port) and runs a mixed load against it for SOAK_MINUTES, with the
// official `phoenix` client of test/integration/node_modules:
//   - well-behaved clients on nodes 1 and 2 (the surviving nodes): receivers
//     on room:lobby, each also tracked on presence:soak, and publishers that
//     push new_msg {"body":"soak|<publisher>|<seq>"} a few times a second;
//   - churn on all three nodes: sockets that connect, join, chat and
//     disconnect; presence joins and leaves; bursts of 100 messages of
//     16 KB; channel crashes (RoomChannel's `crash` event: phx_error,
//     rejoin); slow consumers (raw WebSockets that join room:lobby and stop
//     reading for 30..60 s: with --max-frame-size 64 KiB the nodes cut them
//     past 4 MiB + 64 KiB queued); garbage clients (random bytes as an HTTP
//     request, and random bytes after a good WebSocket upgrade);
//   - node 3 killed with SIGKILL every SOAK_KILL_EVERY_S seconds (default
//     240, at most a third of the load phase), restarted by the cluster
//     command.
// Phases: warm-up (a tenth of the run, 60..300 s) under load, then a quiet
// point (churn stopped, only the well-behaved clients) where every node's
// RSS and fd count are the baseline; the load; then the same quiet point
// again for the final figures.  Every 10 s it samples each node's RSS (and
// its anonymous part: RSS also counts the pages of shared libraries as code
// runs), fds and sockets (/proc/PID/status, /proc/PID/fd) into
// results/soak/samples.csv and plots them with gnuplot when present
// (results/soak/soak.png); the cluster's log is results/soak/cluster.log.
//
// Pass (each checked, the summary says which failed; exit 1 on failure):
//   1. no loss: every receiver got every publisher's messages, in order,
//      no gaps, no duplicates, and no well-behaved socket was closed;
//   2. nodes 1 and 2 never died (same pid from start to end), node 3 came
//      back after every kill, and no other node exit was logged;
//   3. every node's RSS and fd count at the end are within +-10% of the
//      baseline (node 3, a fresh process after its last kill: RSS at most
//      +10%, since a new process has not grown its heap yet); in a
//      sanitizer build RSS is only reported (ASan's quarantine holds up to
//      256 MB of freed memory), fds are still judged;
//   4. the log has no crash report other than the provoked ones (reason
//      "crash requested by the client"), at most as many as provoked;
//   5. no sanitizer report in the log (`make soak SANITIZER=address`), and
//      the cluster command exits 0 after SIGTERM;
//   6. presence converges: presence:soak lists exactly the receivers.
// Bounded: a watchdog kills everything SOAK_MINUTES + 5 min after start.
// Env: SOAK_MINUTES (default 60), SOAK_KILL_EVERY_S, SOAK_RESULTS (dir),
// SOAK_SANITIZER (address or thread: the build is sanitized; make sets it).

const path = require('node:path')
const fs = require('node:fs')
const net = require('node:net')
const crypto = require('node:crypto')
const { spawn } = require('node:child_process')
const { createRequire } = require('node:module')

const ROOT = path.resolve(__dirname, '../..')
const req = createRequire(path.join(ROOT, 'test/integration/package.json'))
const { Socket, Presence } = req('phoenix')
const WebSocket = req('ws')

const BUILD = path.resolve(ROOT, process.argv[2] || 'build')
const BIN = path.join(BUILD, 'phx-chat')
const MINUTES = Number(process.env.SOAK_MINUTES || 60)
const DURATION_MS = MINUTES * 60000
const WARMUP_MS = Math.min(300000, Math.max(60000, DURATION_MS / 10))
const KILL_EVERY_MS = Math.min(Number(process.env.SOAK_KILL_EVERY_S || 240) * 1000, (DURATION_MS - WARMUP_MS) / 3)
const SAMPLE_MS = 10000
const OUT = path.resolve(ROOT, process.env.SOAK_RESULTS || 'results/soak')
const RECEIVERS_PER_NODE = 3
const PUBLISHERS_PER_NODE = 2
const PUBLISH_EVERY_MS = 200
// The nodes' --max-frame-size: a WebSocket client is cut as a slow consumer
// past 4 MiB + this queued, which the bursts below reach in a slow consumer.
const MAX_FRAME = 65536
const BURST_MSGS = 100
const BURST_BODY = 16384
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer/
const PROVOKED_CRASH = 'crash requested by the client'
// A sanitizer build (make soak SANITIZER=...; else build-address/ and the
// like): its RSS grows with ASan's quarantine of freed memory (256 MB), so
// RSS is reported, not judged; fds and everything else are.
const SANITIZED = process.env.SOAK_SANITIZER || ((/^build-(address|thread)$/.exec(path.basename(BUILD)) || [])[1] || '')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const rnd = (n) => Math.floor(Math.random() * n)
const t0 = Date.now()
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1)
const say = (msg) => console.log(`[soak ${elapsed()}s] ${msg}`)

async function waitFor (cond, timeout, what, interval = 100) {
  const deadline = Date.now() + timeout
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(interval)
  }
}

function portFree (p) {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(p, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

// HTTP ports P..P+2 and mesh ports C..C+2, all free.
async function freePorts () {
  for (let i = 0; i < 200; i++) {
    const p = 20000 + rnd(30000)
    const c = p + 1000
    let ok = true
    for (const q of [p, p + 1, p + 2, c, c + 1, c + 2]) if (!(ok = await portFree(q))) break
    if (ok) return { port: p, cport: c }
  }
  throw new Error('no free ports')
}

// ---------------------------------------------------------------------------
// The cluster

const cluster = {
  proc: null,
  log: null, // write stream of results/soak/cluster.log
  logText: '', // its text (scanned at the end)
  pids: [0, 0, 0], // the current pid of node i+1 (from the command's lines)
  restarts: [0, 0, 0],
  exitLines: [], // "phx-chat cluster: NODE (pid N) ..." lines: node exits
  exited: null
}

function onClusterLine (line) {
  let m = /^node(\d)@\S+ http:\/\/\S+ cluster \S+ pid (\d+)( \(restarted\))?/.exec(line)
  if (m) {
    const i = Number(m[1]) - 1
    cluster.pids[i] = Number(m[2])
    if (m[3]) cluster.restarts[i]++
  }
  m = /^phx-chat cluster: (node\d)@\S+ \(pid (\d+)\) (.*)$/.exec(line)
  if (m) cluster.exitLines.push({ node: m[1], pid: Number(m[2]), what: m[3], at: elapsed() })
}

function startCluster (port, cport) {
  const args = ['cluster', '--nodes', '3', '--port', String(port), '--cluster-port', String(cport),
    '--heartbeat-ms', '200', '--down-after-ms', '1000', '--log-level', 'warning', '--drain-timeout-ms', '2000',
    '--max-frame-size', String(MAX_FRAME)]
  say(`starting ${BIN} ${args.join(' ')}`)
  cluster.log = fs.createWriteStream(path.join(OUT, 'cluster.log'))
  // glibc keeps the heap's high-water mark (the slow consumers' megabytes of
  // 16 KB messages): with blocks >= 16 KB mmapped and a low trim threshold,
  // freed memory goes back to the system and RSS shows leaks, not peaks.
  const env = { ...process.env }
  if (!SANITIZED && !env.GLIBC_TUNABLES) env.GLIBC_TUNABLES = 'glibc.malloc.mmap_threshold=16384:glibc.malloc.trim_threshold=131072'
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env })
  let partial = ''
  const onData = (d) => {
    const s = d.toString()
    cluster.log.write(s)
    cluster.logText += s
    partial += s
    const lines = partial.split('\n')
    partial = lines.pop()
    for (const l of lines) onClusterLine(l)
  }
  proc.stdout.on('data', onData)
  proc.stderr.on('data', onData)
  cluster.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  cluster.proc = proc
}

async function nodeUp (url, want) {
  try {
    const r = await fetch(url + '/api/cluster', { signal: AbortSignal.timeout(1000) })
    const j = await r.json()
    return (j.members || []).filter((m) => m.up !== false && m.name !== j.name).length >= want
  } catch (_) { return false }
}

// ---------------------------------------------------------------------------
// /proc figures

function procFigures (pid) {
  try {
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const rss = Number((/VmRSS:\s+(\d+)/.exec(st) || [])[1] || 0)
    // the process's own memory; the rest of RSS is mapped files (code)
    const anon = Number((/RssAnon:\s+(\d+)/.exec(st) || [])[1] || 0)
    const fds = fs.readdirSync(`/proc/${pid}/fd`)
    let sockets = 0
    for (const f of fds) {
      try { if (fs.readlinkSync(`/proc/${pid}/fd/${f}`).startsWith('socket:')) sockets++ } catch (_) { /* closed */ }
    }
    return { rss, anon, fds: fds.length, sockets }
  } catch (_) { return null }
}

let csv = null
let phase = 'warmup'
function sample () {
  const out = []
  for (let i = 0; i < 3; i++) {
    const f = procFigures(cluster.pids[i])
    if (!f) continue
    csv.write(`${elapsed()},node${i + 1},${cluster.pids[i]},${f.rss},${f.fds},${f.sockets},${phase},${f.anon}\n`)
    out.push(f)
  }
  return out
}

// ---------------------------------------------------------------------------
// Well-behaved clients

const stats = {
  connects: 0, crashes: 0, crashErrors: 0, presenceJoins: 0, bursts: 0, slow: 0, slowClosedByServer: 0,
  garbageHttp: 0, garbageWs: 0, kills: 0, published: 0, received: 0, wellBehavedClosed: []
}

function newSocket (url, extra = {}) {
  return new Socket(url.replace(/^http/, 'ws') + '/socket', {
    transport: WebSocket, timeout: 10000, heartbeatIntervalMs: 5000, reconnectAfterMs: () => 500, ...extra
  })
}

function joined (channel, what, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`join of ${what} timed out`)), timeout)
    channel.join().receive('ok', () => { clearTimeout(t); resolve() })
      .receive('error', (e) => { clearTimeout(t); reject(new Error(`join of ${what}: ${JSON.stringify(e)}`)) })
  })
}

class Receiver {
  constructor (name, url) {
    this.name = name
    this.seqs = new Map() // publisher -> { next, gaps, dups }
    this.socket = newSocket(url, { reconnectAfterMs: () => 3600000 })
    this.socket.onClose(() => { if (!stopping) stats.wellBehavedClosed.push(`${name} ${elapsed()}s`) })
    this.socket.connect()
    this.lobby = this.socket.channel('room:lobby', {})
    this.lobby.on('new_msg', (p) => this.onMsg(p))
    this.presence = this.socket.channel('presence:soak', { name })
  }

  async join () {
    await joined(this.lobby, `${this.name} room:lobby`)
    await joined(this.presence, `${this.name} presence:soak`)
  }

  onMsg (p) {
    const m = /^soak\|([^|]+)\|(\d+)$/.exec(p && p.body)
    if (!m) return
    stats.received++
    const seq = Number(m[2])
    let s = this.seqs.get(m[1])
    if (!s) this.seqs.set(m[1], (s = { next: 1, gaps: [], dups: 0 }))
    if (seq === s.next) s.next++
    else if (seq < s.next) s.dups++
    else { s.gaps.push(`${s.next}..${seq - 1}`); s.next = seq + 1 }
  }
}

class Publisher extends Receiver {
  constructor (name, url) {
    super(name, url)
    this.seq = 0
    this.timer = null
  }

  start () {
    this.timer = setInterval(() => {
      this.seq++
      stats.published++
      this.lobby.push('new_msg', { body: `soak|${this.name}|${this.seq}` })
    }, PUBLISH_EVERY_MS + rnd(50))
  }

  stop () { clearInterval(this.timer) }
}

// ---------------------------------------------------------------------------
// Churn

let stopping = false // the end: well-behaved closes are expected
let churnOn = true
const churnTasks = new Set()
const openThings = new Set() // sockets to close when the churn stops

function track (x) { openThings.add(x); return x }
function untrack (x) { openThings.delete(x) }

function pickUrl (urls) { return urls[rnd(urls.length)] }

// connect, join room:lobby, chat a bit, maybe crash the channel, disconnect
async function churnChat (url) {
  const s = track(newSocket(url))
  stats.connects++
  s.connect()
  const ch = s.channel('room:lobby', {})
  try {
    await joined(ch, 'churn room:lobby', 5000)
    for (let i = 0; i < 3 + rnd(5) && churnOn; i++) {
      ch.push('new_msg', { body: `churn ${rnd(1e6)}` })
      if (rnd(3) === 0) ch.push('ping', { n: i })
      await sleep(100 + rnd(400))
    }
    if (rnd(2) === 0) {
      // RoomChannel's crash: phx_error, the client rejoins by itself
      const errored = new Promise((resolve) => ch.onError(resolve))
      stats.crashes++
      ch.push('crash', {})
      await Promise.race([errored, sleep(3000)])
      await sleep(200 + rnd(800))
    }
  } catch (_) { /* node 3 killed under it: fine */ }
  s.disconnect()
  untrack(s)
}

// join and leave presence:soak
async function churnPresence (url) {
  const s = track(newSocket(url))
  stats.connects++
  s.connect()
  const ch = s.channel('presence:soak', { name: `churn-${crypto.randomBytes(4).toString('hex')}` })
  try {
    await joined(ch, 'churn presence', 5000)
    stats.presenceJoins++
    await sleep(500 + rnd(3000))
    await new Promise((resolve) => { ch.leave().receive('ok', resolve); setTimeout(resolve, 2000) })
  } catch (_) { /* node 3 killed under it */ }
  s.disconnect()
  untrack(s)
}

// a burst of BURST_MSGS messages of BURST_BODY bytes on room:lobby (fills
// the slow consumers' queues)
async function churnBurst (url) {
  const s = track(newSocket(url))
  s.connect()
  const ch = s.channel('room:lobby', {})
  try {
    await joined(ch, 'burst room:lobby', 5000)
    stats.bursts++
    const body = 'x'.repeat(BURST_BODY)
    for (let i = 0; i < BURST_MSGS; i++) ch.push('new_msg', { body })
    await sleep(1000)
  } catch (_) { /* node 3 killed under it */ }
  s.disconnect()
  untrack(s)
}

function wsUpgrade (url) {
  const u = new URL(url)
  const key = crypto.randomBytes(16).toString('base64')
  const sock = net.connect(Number(u.port), u.hostname)
  sock.on('error', () => {})
  sock.write('GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: ' + u.host + '\r\nUpgrade: websocket\r\n' +
    'Connection: Upgrade\r\nSec-WebSocket-Key: ' + key + '\r\nSec-WebSocket-Version: 13\r\n\r\n')
  return sock
}

// One masked client text frame.
function frame (text) {
  const data = Buffer.from(text)
  const mask = crypto.randomBytes(4)
  let head
  if (data.length < 126) head = Buffer.from([0x81, 0x80 | data.length])
  else { head = Buffer.alloc(4); head[0] = 0x81; head[1] = 0x80 | 126; head.writeUInt16BE(data.length, 2) }
  const body = Buffer.alloc(data.length)
  for (let i = 0; i < data.length; i++) body[i] = data[i] ^ mask[i % 4]
  return Buffer.concat([head, mask, body])
}

// A raw WebSocket that joins room:lobby and then stops reading for 30..60 s;
// then it reads again: a socket the server cut as a slow consumer ends once
// the kernel's buffers are read (counted), one still open is dropped.
async function churnSlow (url) {
  const sock = track(wsUpgrade(url))
  stats.slow++
  let ended = false
  sock.on('end', () => { ended = true })
  sock.on('close', () => { ended = true })
  sock.write(frame(JSON.stringify(['1', '1', 'room:lobby', 'phx_join', {}])))
  await sleep(300)
  sock.pause()
  for (let waited = 0; waited < 30000 + rnd(30000) && churnOn; waited += 500) await sleep(500)
  sock.on('data', () => {})
  sock.resume()
  for (let waited = 0; waited < 3000 && !ended; waited += 100) await sleep(100)
  if (ended) stats.slowClosedByServer++
  sock.destroy()
  untrack(sock)
}

// Random bytes: as an HTTP request, or after a good WebSocket upgrade.
async function churnGarbage (url) {
  let sock
  if (rnd(2) === 0) {
    const u = new URL(url)
    sock = track(net.connect(Number(u.port), u.hostname))
    sock.on('error', () => {})
    stats.garbageHttp++
    const junk = crypto.randomBytes(1 + rnd(4096))
    sock.write(rnd(2) ? junk : Buffer.concat([Buffer.from('GET /'), junk]))
  } else {
    sock = track(wsUpgrade(url))
    stats.garbageWs++
    await sleep(100)
    const junk = crypto.randomBytes(1 + rnd(4096))
    sock.write(rnd(2) ? junk : frame(junk.toString('latin1')))
  }
  sock.resume()
  await new Promise((resolve) => { sock.on('close', resolve); setTimeout(resolve, 2000) })
  sock.destroy()
  untrack(sock)
}

// Runs `fn(url)` again and again (at most `conc` at a time) while churnOn.
function loop (name, conc, urls, fn, pauseMs) {
  for (let k = 0; k < conc; k++) {
    const task = (async () => {
      while (churnOn) {
        try { await fn(pickUrl(urls)) } catch (e) { say(`${name}: ${e.message}`) }
        await sleep(pauseMs + rnd(pauseMs))
      }
    })()
    churnTasks.add(task)
  }
}

function startChurn (urls) {
  churnOn = true
  loop('chat', 4, urls, churnChat, 200)
  loop('presence', 3, urls, churnPresence, 200)
  loop('burst', 2, urls, churnBurst, 5000)
  loop('slow', 2, urls, churnSlow, 1000)
  loop('garbage', 2, urls, churnGarbage, 300)
}

async function stopChurn () {
  churnOn = false
  await Promise.race([Promise.all([...churnTasks]), sleep(60000)])
  churnTasks.clear()
  for (const x of openThings) {
    try { if (x.disconnect) x.disconnect(); else x.destroy() } catch (_) { /* closed */ }
  }
  openThings.clear()
}

// ---------------------------------------------------------------------------
// Presence: presence:soak must list exactly `names` (joined from node url)

async function presenceNames (url) {
  const s = newSocket(url)
  s.connect()
  const ch = s.channel('presence:soak', { name: 'soak-observer' })
  const p = new Presence(ch)
  try {
    await joined(ch, 'observer presence', 5000)
    await sleep(500)
    return p.list((id) => id).filter((n) => n !== 'soak-observer').sort()
  } finally { s.disconnect() }
}

// ---------------------------------------------------------------------------
// Plot

function plot () {
  const png = path.join(OUT, 'soak.png')
  // one file per node (node3.csv: each restart starts a new line block)
  const rows = fs.readFileSync(path.join(OUT, 'samples.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','))
  for (const n of ['node1', 'node2', 'node3']) {
    let pid = null
    const lines = []
    for (const r of rows.filter((x) => x[1] === n)) {
      if (pid !== null && r[2] !== pid) lines.push('')
      pid = r[2]
      lines.push(r.join(','))
    }
    fs.writeFileSync(path.join(OUT, `${n}.csv`), lines.join('\n') + '\n')
  }
  const panel = (col, label) => `set ylabel '${label}'
plot for [n in 'node1 node2 node3'] '${OUT}/'.n.'.csv' using 1:${col} with linespoints title n
`
  const script = `set datafile separator ','
set terminal png size 1200,900
set output '${png}'
set multiplot layout 3,1 title 'phx-c soak: ${MINUTES} min, 3 nodes (node3 killed with -9 every ${KILL_EVERY_MS / 1000} s)'
set xlabel 's'
set key left top
${panel(4, 'RSS (kB)')}${panel(5, 'fds')}${panel(6, 'sockets')}unset multiplot
`
  fs.writeFileSync(path.join(OUT, 'soak.gp'), script)
  return new Promise((resolve) => {
    const g = spawn('gnuplot', [path.join(OUT, 'soak.gp')], { stdio: 'inherit' })
    g.on('error', () => { say('gnuplot not found: no plot'); resolve(null) })
    g.on('exit', (code) => resolve(code === 0 ? png : null))
  })
}

// ---------------------------------------------------------------------------
// Main

async function main () {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing (make)`)
  fs.mkdirSync(OUT, { recursive: true })
  csv = fs.createWriteStream(path.join(OUT, 'samples.csv'))
  csv.write('t_s,node,pid,rss_kb,fds,sockets,phase,rss_anon_kb\n')
  const failures = []
  const check = (ok, what) => { if (!ok) failures.push(what); say(`${ok ? 'ok  ' : 'FAIL'} ${what}`) }

  const { port, cport } = await freePorts()
  const urls = [0, 1, 2].map((i) => `http://127.0.0.1:${port + i}`)
  startCluster(port, cport)
  for (const u of urls) await waitFor(() => nodeUp(u, 2), 30000, `${u} to see 2 peers up`)
  await waitFor(() => cluster.pids.every((p) => p > 0), 5000, 'the node pids')
  const firstPids = [...cluster.pids]
  say(`cluster up: ${urls.join(' ')} pids ${firstPids.join(' ')}`)
  const sampler = setInterval(sample, SAMPLE_MS)
  sample()

  // Well-behaved clients on nodes 1 and 2.
  const receivers = []
  const publishers = []
  for (let n = 0; n < 2; n++) {
    for (let i = 0; i < RECEIVERS_PER_NODE; i++) receivers.push(new Receiver(`r${n + 1}-${i}`, urls[n]))
    for (let i = 0; i < PUBLISHERS_PER_NODE; i++) publishers.push(new Publisher(`p${n + 1}-${i}`, urls[n]))
  }
  const everyone = receivers.concat(publishers)
  for (const c of everyone) await c.join()
  for (const p of publishers) p.start()
  say(`${receivers.length} receivers and ${publishers.length} publishers on nodes 1 and 2`)

  // Warm-up under load, then the quiet point: the baseline.
  startChurn(urls)
  await sleep(WARMUP_MS)
  await stopChurn()
  await sleep(5000)
  phase = 'baseline'
  const base = sample()
  say(`baseline: ${base.map((f, i) => `node${i + 1} rss ${f.rss} kB fds ${f.fds}`).join(', ')}`)

  // The load, with node 3 killed every KILL_EVERY_MS.
  phase = 'load'
  startChurn(urls)
  const loadEnd = t0 + DURATION_MS
  let nextKill = Date.now() + KILL_EVERY_MS
  const killErrors = []
  while (Date.now() < loadEnd - 10000) {
    await sleep(Math.max(0, Math.min(nextKill, loadEnd) - Date.now()))
    if (Date.now() >= nextKill && Date.now() < loadEnd - 20000) {
      const pid = cluster.pids[2]
      const restarts = cluster.restarts[2]
      say(`kill -9 node3 (pid ${pid})`)
      process.kill(pid, 'SIGKILL')
      stats.kills++
      try {
        await waitFor(() => cluster.restarts[2] > restarts, 20000, 'node3 to be restarted')
        await waitFor(() => nodeUp(urls[2], 2), 20000, 'node3 to rejoin the cluster')
        say(`node3 back (pid ${cluster.pids[2]})`)
      } catch (e) { killErrors.push(e.message) }
      nextKill += KILL_EVERY_MS
    }
  }
  await sleep(Math.max(0, loadEnd - Date.now()))

  // The quiet point again.
  phase = 'end'
  await stopChurn()
  for (const p of publishers) p.stop()
  const lastSeq = new Map(publishers.map((p) => [p.name, p.seq]))
  const allIn = () => everyone.every((r) => [...lastSeq].every(([p, last]) => (r.seqs.get(p) || { next: 1 }).next > last))
  try { await waitFor(allIn, 15000, 'every message to arrive') } catch (_) { /* reported below */ }
  // fds settle down as closed sockets are reaped
  let end = null
  try {
    await waitFor(() => {
      end = sample()
      return end.length === 3 && end.every((f, i) => Math.abs(f.fds - base[i].fds) <= base[i].fds * 0.1)
    }, 30000, 'fds to settle', 2000)
  } catch (_) { /* reported below */ }
  await sleep(2000)
  end = sample()
  clearInterval(sampler)

  // 1. no loss
  const lost = []
  for (const r of everyone) {
    for (const [p, last] of lastSeq) {
      const s = r.seqs.get(p) || { next: 1, gaps: [], dups: 0 }
      if (s.next !== last + 1 || s.gaps.length || s.dups) {
        lost.push(`${r.name} from ${p}: got up to ${s.next - 1} of ${last}, gaps ${s.gaps.slice(0, 5).join(',')}, dups ${s.dups}`)
      }
    }
  }
  check(lost.length === 0, `no loss: ${everyone.length} clients x ${publishers.length} publishers, ${stats.published} published, ${stats.received} received` +
    (lost.length ? `\n    ${lost.slice(0, 10).join('\n    ')}` : ''))
  check(stats.wellBehavedClosed.length === 0, `no well-behaved socket closed${stats.wellBehavedClosed.length ? ': ' + stats.wellBehavedClosed.join(', ') : ''}`)

  // 6. presence
  const want = receivers.map((r) => r.name).concat(publishers.map((p) => p.name)).sort()
  let got = null
  try {
    await waitFor(async () => {
      got = await presenceNames(urls[rnd(2)])
      return JSON.stringify(got) === JSON.stringify(want)
    }, 20000, 'presence to converge', 1000)
  } catch (_) { /* reported */ }
  check(JSON.stringify(got) === JSON.stringify(want), `presence:soak lists exactly the ${want.length} well-behaved clients` +
    (JSON.stringify(got) === JSON.stringify(want) ? '' : ` (got ${got && got.length}: ${JSON.stringify(got).slice(0, 300)})`))

  // 2. node lives
  check(cluster.pids[0] === firstPids[0] && cluster.pids[1] === firstPids[1] && cluster.restarts[0] === 0 && cluster.restarts[1] === 0,
    `nodes 1 and 2 never restarted (pids ${firstPids[0]} ${firstPids[1]})`)
  check(killErrors.length === 0, `node3 back after each of ${stats.kills} kills${killErrors.length ? ': ' + killErrors.join('; ') : ''}`)
  const unexpected = cluster.exitLines.filter((l) => !(l.node === 'node3' && /killed by signal 9/.test(l.what)))
  check(unexpected.length === 0 && cluster.exitLines.length === stats.kills,
    `node exits: exactly the ${stats.kills} provoked${unexpected.length ? ': ' + unexpected.map((l) => `${l.node} ${l.what}`).join('; ') : ''}`)

  // 3. RSS and fds
  for (let i = 0; i < 3; i++) {
    const b = base[i]
    const e = end[i]
    if (!b || !e) { check(false, `node${i + 1}: figures missing`); continue }
    const dr = (e.rss - b.rss) / b.rss
    const df = (e.fds - b.fds) / b.fds
    const rssOk = i === 2 && cluster.pids[2] !== firstPids[2] ? dr <= 0.1 : Math.abs(dr) <= 0.1
    const pct = (x) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`
    const da = b.anon ? (e.anon - b.anon) / b.anon : 0
    const rssWhat = `node${i + 1} RSS ${b.rss} -> ${e.rss} kB (${pct(dr)}; anonymous ${b.anon} -> ${e.anon} kB, ${pct(da)})`
    if (SANITIZED) say(`info ${rssWhat}: not judged, ${SANITIZED} build (ASan's quarantine keeps freed memory)`)
    else check(rssOk, rssWhat)
    check(Math.abs(df) <= 0.1, `node${i + 1} fds ${b.fds} -> ${e.fds} (${pct(df)})`)
  }

  // Stop: the well-behaved clients, then the cluster (SIGTERM: exit 0).
  stopping = true
  for (const c of everyone) c.socket.disconnect()
  cluster.proc.kill('SIGTERM')
  const ex = await Promise.race([cluster.exited, sleep(30000).then(() => null)])
  if (!ex) cluster.proc.kill('SIGKILL')
  check(ex && ex.code === 0, `the cluster command exited 0 after SIGTERM (${ex ? `code ${ex.code} signal ${ex.signal}` : 'timeout'})`)
  await new Promise((resolve) => cluster.log.end(resolve))

  // 4. crash reports, 5. sanitizer
  const reports = cluster.logText.split('\n').filter((l) => l.includes('crash report'))
  const provoked = reports.filter((l) => l.endsWith(PROVOKED_CRASH))
  const other = reports.filter((l) => !l.endsWith(PROVOKED_CRASH))
  check(other.length === 0 && provoked.length <= stats.crashes,
    `crash reports: ${provoked.length} provoked (of ${stats.crashes} crash events sent), ${other.length} other` +
    (other.length ? `\n    ${other.slice(0, 5).join('\n    ')}` : ''))
  const san = cluster.logText.split('\n').filter((l) => SANITIZER_RE.test(l))
  check(san.length === 0, `no sanitizer report${san.length ? ': ' + san.slice(0, 3).join(' | ') : ''}`)

  await new Promise((resolve) => csv.end(resolve))
  const png = await plot()
  say(`load: ${stats.connects} churn connects, ${stats.crashes} channel crashes, ${stats.presenceJoins} presence joins, ` +
    `${stats.bursts} bursts, ${stats.slow} slow consumers (${stats.slowClosedByServer} closed by the server), ` +
    `${stats.garbageHttp} garbage HTTP, ${stats.garbageWs} garbage WS, ${stats.kills} kills of node3`)
  say(`results: ${path.join(OUT, 'samples.csv')}, ${path.join(OUT, 'cluster.log')}${png ? ', ' + png : ''}`)
  console.log(failures.length ? `soak: FAIL (${failures.length} check(s) failed)` : `soak: PASS (${MINUTES} min)`)
  return failures.length ? 1 : 0
}

// Bounded: whatever happens, everything stops SOAK_MINUTES + 5 min after start.
const watchdog = setTimeout(() => {
  console.log('soak: FAIL (watchdog: still running after SOAK_MINUTES + 5 min)')
  if (cluster.proc) cluster.proc.kill('SIGKILL')
  process.exit(1)
}, DURATION_MS + 300000)
watchdog.unref()
process.on('exit', () => { if (cluster.proc && cluster.proc.exitCode === null) cluster.proc.kill('SIGKILL') })

main().then((code) => process.exit(code), (e) => {
  console.log(`soak: FAIL (${e.stack || e})`)
  if (cluster.proc) cluster.proc.kill('SIGKILL')
  process.exit(1)
})
