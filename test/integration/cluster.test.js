'use strict'
// Clusters of phx-chat processes (PHX_BIN), each node a separate OS process on
// free ports, with clients of the official `phoenix` client on every node:
//   - a mesh of three nodes (--cluster-listen/--peers): broadcasts (new_msg,
//     POST /api/broadcast) reach every node's clients exactly once, shout
//     skips only its sender, /api/disconnect closes a user's sockets on every
//     node, presence lists everyone; kill -9 of a node (its presences leave,
//     the others go on; started again it rejoins), SIGSTOP past the failure
//     detection (declared down, then up after SIGCONT, presence converges);
//     long polling with a session of node 1 polled and posted to through
//     nodes 2 and 3, and its end seen from another node;
//   - two nodes linked through a redis-server started here (broadcast,
//     presence, and redis stopped and started again: the nodes reconnect);
//   - the `cluster` command: a node killed with -9 is restarted (a new pid
//     listening on the same port), SIGTERM stops all; with --one-port two
//     clustered nodes share one HTTP port (both answer /api/cluster there),
//     and phoenix.js's LongPoll, each request on a connection of its own,
//     chats through that port with a WebSocket client.
// Env: PHX_BIN (the binary; run.sh passes it).  Ports: free ones from the
// kernel, checked one by one (two consecutive for the cluster command).
// Every process started here is killed at the end, also on failure.

const test = require('node:test')
const { describe, before, after } = test
const assert = require('node:assert/strict')
const net = require('node:net')
const { spawn, spawnSync } = require('node:child_process')
// phoenix.js looks XMLHttpRequest up on `self` (set before it loads): long polling
globalThis.self = globalThis
const { Socket, Presence, LongPoll } = require('phoenix')
const {
  PHX_BIN, WebSocket, RawClient, sleep, uniq, waitFor, httpGet, postJSON, freePort, waitHttp,
  withTimeout, listeners
} = require('./lib')

const T = { timeout: 30000 }
// Failure detection kept short so that the tests are too.
const NODE_FLAGS = ['--heartbeat-ms', '200', '--down-after-ms', '1000', '--schedulers', '2', '--log-level', 'warning',
  '--longpoll-window-ms', '1000']
const MEMBERS_WAIT = 15000
const PRESENCE_WAIT = 10000

// Every child process, so that nothing outlives the file.
const children = new Set()
function track (proc) {
  children.add(proc)
  proc.on('exit', () => children.delete(proc))
  return proc
}
function killAll () {
  for (const p of children) {
    try { process.kill(p.pid, 'SIGCONT') } catch (_) { /* gone */ }
    try { p.kill('SIGKILL') } catch (_) { /* gone */ }
  }
}
process.on('exit', killAll)
after(killAll)

// ---------------------------------------------------------------------------
// Nodes

class Node {
  // link: { listen, peers } (mesh) or { redis } (redis)
  constructor (name, port, link) {
    this.name = name
    this.port = port
    this.link = link
    this.url = `http://127.0.0.1:${port}`
    this.ws = `ws://127.0.0.1:${port}`
    this.proc = null
    this.log = ''
  }

  args () {
    const a = ['--name', this.name, '--port', String(this.port)]
    if (this.link.redis) a.push('--pubsub', this.link.redis)
    else {
      a.push('--cluster-listen', this.link.listen)
      if (this.link.peers.length) a.push('--peers', this.link.peers.join(','))
    }
    return a.concat(NODE_FLAGS)
  }

  start () {
    const proc = track(spawn(PHX_BIN, this.args(), { stdio: ['ignore', 'pipe', 'pipe'] }))
    this.log += `--- start pid ${proc.pid}\n`
    proc.stdout.on('data', (d) => { this.log += d })
    proc.stderr.on('data', (d) => { this.log += d })
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
    this.proc = proc
    return this
  }

  get alive () { return this.proc && this.proc.exitCode === null && this.proc.signalCode === null }

  async kill9 () {
    this.proc.kill('SIGKILL')
    await withTimeout(this.exited, 5000, `${this.name} to die`)
  }

  async stop () {
    if (!this.alive) return
    try { process.kill(this.proc.pid, 'SIGCONT') } catch (_) { /* gone */ }
    this.proc.kill('SIGTERM')
    const r = await Promise.race([this.exited, sleep(10000).then(() => null)])
    if (!r) {
      this.proc.kill('SIGKILL')
      await this.exited
      throw new Error(`${this.name} did not exit within 10 s of SIGTERM\n${this.log.slice(-2000)}`)
    }
    return r
  }

  async cluster () {
    const r = await httpGet('/api/cluster', {}, this.url)
    assert.equal(r.status, 200, `${this.name} GET /api/cluster: ${r.status} ${r.text}`)
    return r.json
  }

  // Names of the members this node reports up (itself excluded).
  async upMembers () {
    try {
      const j = await this.cluster()
      return (j.members || []).filter((m) => m.up !== false && m.name !== this.name).map((m) => m.name).sort()
    } catch (_) { return null }
  }
}

async function waitMembers (node, names, what) {
  const want = JSON.stringify([...names].sort())
  let last = null
  try {
    await waitFor(async () => { last = await node.upMembers(); return JSON.stringify(last) === want },
      MEMBERS_WAIT, what || `${node.name} to see ${want} up`, 100)
  } catch (e) {
    e.message += ` (last: ${JSON.stringify(last)})\n${node.name} log:\n${node.log.slice(-1500)}`
    throw e
  }
}

// Waits until node answers HTTP; fails at once, with its output, if it exits.
async function nodeReady (node) {
  try {
    await waitFor(async () => {
      if (!node.alive) throw new Error(`${node.name} exited (${node.proc.exitCode ?? node.proc.signalCode})`)
      try {
        const r = await fetch(node.url + '/api/cluster', { signal: AbortSignal.timeout(1000) })
        await r.text()
        return r.status === 200
      } catch (_) { return false }
    }, 15000, `${node.name} to answer HTTP on ${node.url}`, 50)
  } catch (e) {
    e.message += `\n${node.name} output:\n${node.log.slice(-1500)}`
    throw e
  }
}

async function startAll (nodes) {
  for (const n of nodes) n.start()
  for (const n of nodes) await nodeReady(n)
  for (const n of nodes) await waitMembers(n, nodes.filter((m) => m !== n).map((m) => m.name))
}

async function stopAll (nodes) {
  const errors = []
  for (const n of nodes) {
    try {
      const r = await n.stop()
      if (r && (r.code !== 0 || r.signal)) errors.push(`${n.name} exited ${r.code} ${r.signal || ''}`)
    } catch (e) { errors.push(e.message) }
    if (/ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/.test(n.log)) errors.push(`sanitizer report in ${n.name}'s output:\n${n.log.slice(-3000)}`)
  }
  assert.deepEqual(errors, [])
}

// Ports: n free ports (checked one by one; a server takes them right after).
async function freePorts (n) {
  const ports = new Set()
  while (ports.size < n) ports.add(await freePort())
  return [...ports]
}

// ---------------------------------------------------------------------------
// Clients (closed by t.after)

class Clients {
  constructor (t) {
    this.sockets = []
    this.raws = []
    t.after(() => {
      for (const s of this.sockets) { try { s.disconnect() } catch (_) { /* closed */ } }
      for (const r of this.raws) r.close()
    })
  }

  async px (node, params = {}, opts = {}) {
    const socket = new Socket(`${node.ws}/socket`, {
      transport: WebSocket,
      params,
      timeout: 5000,
      heartbeatIntervalMs: 30000,
      reconnectAfterMs: () => 250,
      rejoinAfterMs: () => 250,
      ...opts
    })
    this.sockets.push(socket)
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no connection to ${node.name}`)), 5000)
      socket.onOpen(() => { clearTimeout(timer); resolve() })
      socket.connect()
    })
    return socket
  }

  async raw (node, params = {}) {
    const c = await RawClient.connect({ base: node.ws, params })
    this.raws.push(c)
    return c
  }
}

function joinOk (socket, topic, params = {}) {
  const channel = socket.channel(topic, params)
  return new Promise((resolve, reject) => {
    channel.join(5000)
      .receive('ok', () => resolve(channel))
      .receive('error', (r) => reject(new Error(`join ${topic} refused: ${JSON.stringify(r)}`)))
      .receive('timeout', () => reject(new Error(`join ${topic} timed out`)))
  })
}

function recorder (channel, event) {
  const got = []
  channel.on(event, (p) => got.push(p))
  return got
}

async function joinPresence (socket, topic, name) {
  const channel = socket.channel(topic, { name })
  const presence = new Presence(channel)
  const leaves = []
  presence.onLeave((key, current) => { if (!current || current.metas.length === 0) leaves.push(key) })
  await new Promise((resolve, reject) => {
    channel.join(5000)
      .receive('ok', resolve)
      .receive('error', (r) => reject(new Error(`presence join refused: ${JSON.stringify(r)}`)))
      .receive('timeout', () => reject(new Error('presence join timed out')))
  })
  return { channel, presence, leaves, names: () => presence.list((key) => key).sort() }
}

async function waitListed (p, names, who) {
  const want = JSON.stringify([...names].sort())
  await waitFor(() => JSON.stringify(p.names()) === want, PRESENCE_WAIT, `${who} to list ${want} (has ${JSON.stringify(p.names())})`, 50)
}

function exactlyOnce (got, pred, who) {
  const n = got.filter(pred).length
  assert.equal(n, 1, `${who} must receive the message exactly once, got ${n}`)
}

// Every client gets every body once: from each node's channel push and
// from POST /api/broadcast on `via`.
async function broadcastEverywhere (t, nodes, via) {
  const c = new Clients(t)
  const chans = []
  for (const n of nodes) chans.push(await joinOk(await c.px(n), 'room:lobby'))
  const msgs = chans.map((ch) => recorder(ch, 'new_msg'))
  const news = chans.map((ch) => recorder(ch, 'news'))
  const bodies = nodes.map((n) => uniq(`from-${n.name.split('@')[0]}-`))
  chans.forEach((ch, i) => ch.push('new_msg', { body: bodies[i] }))
  const headline = uniq('api-')
  const res = await postJSON('/api/broadcast', { topic: 'room:lobby', event: 'news', payload: { headline } }, via.url)
  assert.equal(res.status, 200, res.text)
  for (let i = 0; i < nodes.length; i++) {
    for (const body of bodies) {
      await waitFor(() => msgs[i].some((p) => p.body === body), 5000, `the client on ${nodes[i].name} to get new_msg ${body}`)
    }
    await waitFor(() => news[i].some((p) => p.headline === headline), 5000, `the client on ${nodes[i].name} to get the API broadcast`)
  }
  await sleep(300)
  for (let i = 0; i < nodes.length; i++) {
    for (const body of bodies) exactlyOnce(msgs[i], (p) => p.body === body, `the client on ${nodes[i].name}`)
    exactlyOnce(news[i], (p) => p.headline === headline, `the client on ${nodes[i].name}`)
  }
}

async function presenceEverywhere (t, nodes) {
  const c = new Clients(t)
  const topic = `presence:${uniq('cl')}`
  const ps = []
  for (const n of nodes) ps.push(await joinPresence(await c.px(n), topic, `on-${n.name}`))
  const all = nodes.map((n) => `on-${n.name}`)
  for (let i = 0; i < nodes.length; i++) await waitListed(ps[i], all, `the client on ${nodes[i].name}`)
  return { c, topic, ps, all }
}


// ---------------------------------------------------------------------------
// Long polling by hand (raw HTTP), so that each request goes to a chosen node.

const LP = '/socket/longpoll?vsn=2.0.0'

async function lpGet (node, token) {
  const url = node.url + LP + (token ? `&token=${encodeURIComponent(token)}` : '')
  const r = await fetch(url, { signal: AbortSignal.timeout(8000) })
  assert.equal(r.status, 200, `GET ${url}: HTTP ${r.status}`)
  return r.json()
}

async function lpPost (node, token, lines) {
  const r = await fetch(node.url + LP + `&token=${encodeURIComponent(token)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body: lines.map((l) => JSON.stringify(l)).join('\n'),
    signal: AbortSignal.timeout(8000)
  })
  assert.equal(r.status, 200, `POST to ${node.name}: HTTP ${r.status}`)
  return r.json()
}

// Polls through the given nodes in turn until pred holds for a message (a
// decoded V2 frame); returns every message seen.
async function lpPollUntil (nodes, token, pred, what, ms = 8000) {
  const seen = []
  const deadline = Date.now() + ms
  for (let i = 0; Date.now() < deadline; i++) {
    const j = await lpGet(nodes[i % nodes.length], token)
    assert.ok(j.status === 200 || j.status === 204, `a poll through ${nodes[i % nodes.length].name}: ${JSON.stringify(j)}`)
    assert.equal(j.token, token)
    for (const m of j.messages) seen.push(JSON.parse(m))
    if (seen.some(pred)) return seen
  }
  throw new Error(`long poll: no ${what} within ${ms} ms; seen ${JSON.stringify(seen)}`)
}

// ---------------------------------------------------------------------------

describe('a mesh of three nodes', () => {
  let nodes = []

  before(async () => {
    const ports = await freePorts(6)
    const addrs = [0, 1, 2].map((i) => `tcp://127.0.0.1:${ports[3 + i]}`)
    nodes = [0, 1, 2].map((i) => new Node(`node${i + 1}@127.0.0.1`, ports[i],
      { listen: addrs[i], peers: addrs.filter((_, j) => j !== i) }))
    await startAll(nodes)
  })

  after(async () => { await stopAll(nodes) })

  test('GET /api/cluster names the node and its members', T, async () => {
    const j = await nodes[0].cluster()
    assert.equal(j.name, 'node1@127.0.0.1')
    assert.deepEqual(await nodes[0].upMembers(), ['node2@127.0.0.1', 'node3@127.0.0.1'])
  })

  test('new_msg pushed on every node and POST /api/broadcast reach all clients exactly once', T, async (t) => {
    await broadcastEverywhere(t, nodes, nodes[1])
  })

  test('shout reaches every node but not its sender', T, async (t) => {
    const c = new Clients(t)
    const sender = await joinOk(await c.px(nodes[0]), 'room:lobby')
    const peers = []
    for (const n of nodes) peers.push(await joinOk(await c.px(n), 'room:lobby'))
    const gotSender = recorder(sender, 'shout')
    const got = peers.map((ch) => recorder(ch, 'shout'))
    const msg = uniq('shout-')
    sender.push('shout', { msg })
    for (let i = 0; i < nodes.length; i++) await waitFor(() => got[i].some((p) => p.msg === msg), 5000, `the peer on ${nodes[i].name}`)
    await sleep(300)
    got.forEach((g, i) => exactlyOnce(g, (p) => p.msg === msg, `the peer on ${nodes[i].name}`))
    assert.equal(gotSender.filter((p) => p.msg === msg).length, 0, 'the sender does not get its own shout')
  })

  test('POST /api/disconnect closes the user\'s sockets on every node, nobody else\'s', T, async (t) => {
    const c = new Clients(t)
    const victim = uniq('kick')
    const tok = (await httpGet(`/token?user_id=${victim}`, {}, nodes[0].url)).json.token
    const victims = []
    for (const n of nodes) {
      const r = await c.raw(n, { token: tok })
      await r.joinOk(`room:user:${victim}`)
      victims.push(r)
    }
    const bystanders = []
    for (const n of nodes) {
      const r = await c.raw(n)
      await r.joinOk('room:lobby')
      bystanders.push(r)
    }
    // the user's socket topic must be known on every node before the broadcast
    await sleep(200)
    const res = await postJSON('/api/disconnect', { user_id: victim }, nodes[2].url)
    assert.equal(res.status, 200, res.text)
    for (let i = 0; i < nodes.length; i++) await victims[i].waitClose(5000)
    await sleep(200)
    bystanders.forEach((b, i) => assert.ok(b.isOpen, `the other socket on ${nodes[i].name} stays open`))
  })

  test('presence lists the members of every node on every node', T, async (t) => {
    await presenceEverywhere(t, nodes)
  })

  test('long polling: a session of node 1 is polled and posted to through nodes 2 and 3', T, async (t) => {
    const [a, b, c] = nodes
    const open = await lpGet(a)
    assert.equal(open.status, 410, JSON.stringify(open))
    const tok = open.token
    // join and ping through node 2; the replies come through node 3
    assert.deepEqual(await lpPost(b, tok, [['1', '1', 'room:lobby', 'phx_join', {}], ['1', '2', 'room:lobby', 'ping', { n: 1 }]]), { status: 200 })
    const got = await lpPollUntil([c], tok, (f) => f[1] === '2', 'ping reply')
    assert.deepEqual(got.find((f) => f[1] === '1'), ['1', '1', 'room:lobby', 'phx_reply', { response: {}, status: 'ok' }])
    assert.deepEqual(got.find((f) => f[1] === '2'), ['1', '2', 'room:lobby', 'phx_reply', { response: { n: 1 }, status: 'ok' }])
    // a broadcast from a WebSocket client of node 3 reaches the session, polled through node 2
    const cl = new Clients(t)
    const ws = await joinOk(await cl.px(c), 'room:lobby')
    const wsGot = recorder(ws, 'new_msg')
    const body = uniq('to-lp-')
    ws.push('new_msg', { body })
    await lpPollUntil([b, c], tok, (f) => f[3] === 'new_msg' && f[4].body === body, 'broadcast')
    // and the session's own push reaches the WebSocket client
    const back = uniq('from-lp-')
    assert.deepEqual(await lpPost(c, tok, [['1', '3', 'room:lobby', 'new_msg', { body: back }]]), { status: 200 })
    await waitFor(() => wsGot.some((p) => p.body === back), 5000, 'the WebSocket client to get the long-poll push')
    // a forged token is no session: 410 for a POST on any node
    assert.deepEqual(await lpPost(b, tok.slice(0, -2) + 'xx', [['1', '4', 'room:lobby', 'ping', {}]]), { status: 410 })
    // nobody polls for 1.5 windows: node 1 ends the session (at its next
    // check, every 1.5 windows, as Phoenix's); a poll through node 2 learns it
    // from node 1 and opens a new session there, whose connect (the stale
    // session token as the user token) is refused, as Phoenix does
    await sleep(3500)
    const late = await lpGet(b, tok)
    assert.deepEqual(late, { status: 403 })
    // a POST for it, through node 3: gone
    assert.deepEqual(await lpPost(c, tok, [['1', '5', 'room:lobby', 'ping', {}]]), { status: 410 })
  })

  test('kill -9 of a node: its presences leave elsewhere, the others go on; restarted, it rejoins', { timeout: 45000 }, async (t) => {
    const [n1, n2, n3] = nodes
    const { ps, all } = await presenceEverywhere(t, nodes)
    await n3.kill9()
    const rest = all.filter((k) => k !== `on-${n3.name}`)
    await waitListed(ps[0], rest, `the client on ${n1.name} after the kill`)
    await waitListed(ps[1], rest, `the client on ${n2.name} after the kill`)
    assert.ok(ps[0].leaves.includes(`on-${n3.name}`), 'a presence_diff with the leave reached node 1')
    await waitMembers(n1, [n2.name], `${n1.name} to declare ${n3.name} down`)
    await broadcastEverywhere(t, [n1, n2], n1)

    n3.start()
    await nodeReady(n3)
    for (const n of nodes) await waitMembers(n, nodes.filter((m) => m !== n).map((m) => m.name))
    await broadcastEverywhere(t, nodes, n1)
    // the survivors' members appear on the new node 3
    const c = new Clients(t)
    const p3 = await joinPresence(await c.px(n3), ps[0].channel.topic, `on-${n3.name}`)
    await waitListed(p3, all, `the client on the restarted ${n3.name}`)
    await waitListed(ps[0], all, `the client on ${n1.name} once ${n3.name} is back`)
  })

  test('SIGSTOP past the failure detection: declared down, then up after SIGCONT; presence converges', { timeout: 45000 }, async (t) => {
    const [n1, n2, n3] = nodes
    const { ps, all } = await presenceEverywhere(t, nodes)
    process.kill(n2.proc.pid, 'SIGSTOP')
    let stopped = true
    t.after(() => { if (stopped) try { process.kill(n2.proc.pid, 'SIGCONT') } catch (_) { /* gone */ } })
    await waitMembers(n1, [n3.name], `${n1.name} to declare the stopped ${n2.name} down`)
    await waitMembers(n3, [n1.name], `${n3.name} to declare the stopped ${n2.name} down`)
    const rest = all.filter((k) => k !== `on-${n2.name}`)
    await waitListed(ps[0], rest, `the client on ${n1.name} while ${n2.name} is stopped`)
    process.kill(n2.proc.pid, 'SIGCONT')
    stopped = false
    for (const n of nodes) await waitMembers(n, nodes.filter((m) => m !== n).map((m) => m.name))
    for (let i = 0; i < nodes.length; i++) await waitListed(ps[i], all, `the client on ${nodes[i].name} after SIGCONT`)
    await broadcastEverywhere(t, nodes, n2)
  })
})

// ---------------------------------------------------------------------------

const REDIS = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim()

class Redis {
  constructor (port) { this.port = port; this.proc = null; this.log = '' }

  async start () {
    this.proc = track(spawn(REDIS, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] }))
    this.proc.stdout.on('data', (d) => { this.log += d })
    this.proc.stderr.on('data', (d) => { this.log += d })
    this.exited = new Promise((resolve) => this.proc.on('exit', resolve))
    await waitFor(() => new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1', () => { s.end(); resolve(true) })
      s.on('error', () => resolve(false))
    }), 10000, `redis-server on ${this.port}`, 50)
  }

  async stop () {
    if (!this.proc || this.proc.exitCode !== null) return
    this.proc.kill('SIGKILL')
    await withTimeout(this.exited, 5000, 'redis-server to exit')
  }
}

describe('two nodes linked through Redis', { skip: REDIS ? false : 'redis-server is not installed' }, () => {
  let nodes = []
  let redis = null

  before(async () => {
    const [rport, p1, p2] = await freePorts(3)
    redis = new Redis(rport)
    await redis.start()
    const url = `redis://127.0.0.1:${rport}`
    nodes = [new Node('red1@127.0.0.1', p1, { redis: url }), new Node('red2@127.0.0.1', p2, { redis: url })]
    await startAll(nodes)
  })

  after(async () => {
    try { await stopAll(nodes) } finally { if (redis) await redis.stop() }
  })

  test('broadcasts reach both nodes\' clients exactly once', T, async (t) => {
    await broadcastEverywhere(t, nodes, nodes[0])
  })

  test('presence lists both nodes\' members', T, async (t) => {
    await presenceEverywhere(t, nodes)
  })

  test('redis-server stopped and started again: the nodes reconnect, broadcasts flow again', { timeout: 45000 }, async (t) => {
    await redis.stop()
    await sleep(300)
    await redis.start()
    for (const n of nodes) await waitMembers(n, nodes.filter((m) => m !== n).map((m) => m.name))
    await waitFor(async () => {
      // the first broadcasts after the reconnection may be lost while the
      // subscriptions are made again: retry the whole round until one passes
      try { await broadcastEverywhere(t, nodes, nodes[1]); return true } catch (_) { return false }
    }, 15000, 'a broadcast to reach both nodes after the restart of redis-server', 200)
    await presenceEverywhere(t, nodes)
  })
})

// ---------------------------------------------------------------------------

// Two consecutive free ports starting at a free one (for `cluster --port P`).
async function freePair () {
  for (let i = 0; i < 50; i++) {
    const p = await freePort()
    if (p >= 65535) continue
    const ok = await new Promise((resolve) => {
      const s = net.createServer()
      s.once('error', () => resolve(false))
      s.listen(p + 1, '127.0.0.1', () => s.close(() => resolve(true)))
    })
    if (ok) return p
  }
  throw new Error('no two consecutive free ports')
}

test('the cluster command: a node killed with -9 is restarted (a new pid on the same port); SIGTERM stops all', { timeout: 45000 }, async () => {
  const port = await freePair()
  let cport = await freePair()
  while (Math.abs(cport - port) < 2) cport = await freePair()
  const proc = track(spawn(PHX_BIN, ['cluster', '--nodes', '2', '--port', String(port), '--cluster-port', String(cport), ...NODE_FLAGS],
    { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  proc.stdout.on('data', (d) => { out += d })
  proc.stderr.on('data', (d) => { err += d })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  const pids = () => {
    const m = {}
    for (const line of out.split('\n')) {
      const r = line.match(/^(node\d)@127\.0\.0\.1 (http:\/\/\S+) cluster (tcp:\/\/\S+) pid (\d+)/)
      if (r) m[r[1]] = { url: r[2], addr: r[3], pid: Number(r[4]) }
    }
    return m
  }
  try {
    await waitFor(() => pids().node1 && pids().node2, 10000, 'the command to print both nodes')
    const first = pids()
    assert.equal(first.node1.url, `http://127.0.0.1:${port}`)
    assert.equal(first.node2.url, `http://127.0.0.1:${port + 1}`)
    assert.equal(first.node2.addr, `tcp://127.0.0.1:${cport + 1}`)
    await waitHttp(first.node1.url)
    await waitHttp(first.node2.url)
    await waitFor(() => listeners(port + 1, [first.node2.pid]).length === 1, 5000, 'node2 to listen')

    process.kill(first.node2.pid, 'SIGKILL')
    await waitFor(() => pids().node2.pid !== first.node2.pid, 10000, 'node2 to be restarted')
    const second = pids().node2.pid
    assert.match(err, /node2@127\.0\.0\.1 \(pid \d+\) was killed by signal 9/)
    await waitFor(() => listeners(port + 1, [second]).length === 1, 10000, `the new node2 (pid ${second}) to listen on ${port + 1}`, 50)
    await waitHttp(first.node2.url)
    assert.equal(pids().node1.pid, first.node1.pid, 'node1 was left alone')

    proc.kill('SIGTERM')
    const r = await withTimeout(exited, 15000, 'the cluster command to exit')
    assert.deepEqual(r, { code: 0, signal: null }, err)
    assert.doesNotMatch(err, /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/)
    for (const pid of [first.node1.pid, second]) {
      assert.throws(() => process.kill(pid, 0), /ESRCH/, `node pid ${pid} is gone`)
    }
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL')
    // the nodes get SIGTERM from PR_SET_PDEATHSIG; kill what is left anyway
    for (const { pid } of Object.values(pids())) { try { process.kill(pid, 'SIGKILL') } catch (_) { /* gone */ } }
  }
})

// GET path on 127.0.0.1:port over a new connection each time (no keep-alive).
// XMLHttpRequest for phoenix.js's LongPoll where every request opens a TCP
// connection of its own (node:http, no agent): behind one SO_REUSEPORT port,
// each lands on any node, so a session's polls and POSTs reach other nodes
// than the one holding it.
class FreshXHR {
  constructor () {
    this.readyState = 0
    this.status = 0
    this.responseText = ''
    this.timeout = 0
    this.headers = {}
    this.req = null
  }

  open (method, url) { this.method = method; this.url = url; this.readyState = 1 }
  setRequestHeader (name, value) { this.headers[name] = value }

  send (body) {
    const http = require('node:http')
    const done = (fn) => { if (this.readyState === 4) return; this.readyState = 4; fn() }
    this.req = http.request(this.url, { method: this.method, headers: this.headers, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { text += d })
      res.on('end', () => done(() => {
        this.status = res.statusCode
        this.responseText = text
        if (this.onreadystatechange) this.onreadystatechange()
      }))
    })
    if (this.timeout > 0) {
      this.req.setTimeout(this.timeout, () => {
        this.req.destroy()
        done(() => this.ontimeout && this.ontimeout())
      })
    }
    this.req.on('error', () => done(() => this.onerror && this.onerror()))
    this.req.end(body == null ? undefined : body)
  }

  abort () { this.readyState = 4; if (this.req) this.req.destroy() }
}

function getFresh (port, path) {
  const http = require('node:http')
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, timeout: 5000 }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

test('the cluster command with --one-port: two clustered nodes share one HTTP port', T, async () => {
  const port = await freePort()
  const cport = await freePair()
  const proc = track(spawn(PHX_BIN, ['cluster', '--nodes', '2', '--one-port', '--port', String(port), '--cluster-port', String(cport), ...NODE_FLAGS],
    { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  proc.stdout.on('data', (d) => { out += d })
  proc.stderr.on('data', (d) => { err += d })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  try {
    await waitFor(() => (out.match(/ pid \d+/g) || []).length === 2, 10000, 'the command to print both nodes')
    const pids = [...out.matchAll(/^node\d@127\.0\.0\.1 http:\/\/127\.0\.0\.1:(\d+) .* pid (\d+)$/gm)].map((m) => {
      assert.equal(Number(m[1]), port, 'every node on the one port')
      return Number(m[2])
    })
    await waitFor(() => listeners(port, pids).length === 2, 10000, `both nodes to listen on ${port}`, 50)
    // new connections are spread over both processes: both names answer,
    // and (before long polling across them) each lists the other up
    const seen = new Set()
    const meshed = new Set()
    await waitFor(async () => {
      const r = await getFresh(port, '/api/cluster')
      if (r.status === 200) {
        const j = JSON.parse(r.body)
        seen.add(j.name)
        if ((j.members || []).some((m) => m.name !== j.name && m.up !== false)) meshed.add(j.name)
      }
      return seen.size === 2 && meshed.size === 2
    }, 10000, `both nodes to answer on ${port}, each seeing the other (seen ${[...seen]}, meshed ${[...meshed]})`, 10)
    // phoenix.js over long polling through the one port: its requests land on
    // both nodes, and it chats with a WebSocket client as on one node
    globalThis.XMLHttpRequest = FreshXHR
    const lp = new Socket(`ws://127.0.0.1:${port}/socket`, {
      transport: LongPoll, timeout: 5000, reconnectAfterMs: () => 250, rejoinAfterMs: () => 250
    })
    const ws = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, timeout: 5000 })
    try {
      lp.connect()
      ws.connect()
      const lpCh = await joinOk(lp, 'room:lobby')
      const wsCh = await joinOk(ws, 'room:lobby')
      const lpGot = recorder(lpCh, 'new_msg')
      const wsGot = recorder(wsCh, 'new_msg')
      for (let i = 0; i < 5; i++) {
        const reply = await new Promise((resolve, reject) => {
          lpCh.push('ping', { i }).receive('ok', resolve).receive('error', reject).receive('timeout', () => reject(new Error('ping timed out')))
        })
        assert.deepEqual(reply, { i })
      }
      const a = uniq('lp-'), b = uniq('ws-')
      lpCh.push('new_msg', { body: a })
      wsCh.push('new_msg', { body: b })
      await waitFor(() => [a, b].every((x) => lpGot.some((p) => p.body === x)), 10000, 'the long-poll client to get both')
      await waitFor(() => [a, b].every((x) => wsGot.some((p) => p.body === x)), 10000, 'the WebSocket client to get both')
    } finally {
      lp.disconnect()
      ws.disconnect()
      delete globalThis.XMLHttpRequest
    }
    proc.kill('SIGTERM')
    assert.deepEqual(await withTimeout(exited, 15000, 'the cluster command to exit'), { code: 0, signal: null }, err)
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL')
  }
})
