'use strict'
// bench/cluster_failover.js: how fast a cluster notices a node's death and
// its return, measured with the default failure detection (heartbeat 500 ms,
// down after 3000 ms) unless flags are given.
//
//   node bench/cluster_failover.js BIN [--heartbeat-ms N] [--down-after-ms N] [--json FILE]
//
// Starts three phx-chat nodes (a mesh on free ports) with a Presence client
// of the official `phoenix` client on each (one user per node), then:
//   kill -9 node 3    -> until node 1 reports it down (/api/cluster), and
//                        until node 1's client sees its member leave;
//   start node 3      -> until node 1 reports it up, and until node 1's
//                        client lists node 3's member again (its client
//                        reconnects by itself);
//   SIGSTOP node 2    -> until node 1 reports it down, and its member leaves;
//   SIGCONT node 2    -> until node 1 reports it up, and its member is back
//                        (presence converged).
// Prints one line per figure and a JSON line with all of them (ms).  Uses
// the phoenix client installed for the integration tests.
const path = require('node:path')
const fs = require('node:fs')
const net = require('node:net')
const { spawn } = require('node:child_process')
const root = path.resolve(__dirname, '..')
const { Socket, Presence } = require(path.join(root, 'test/integration/node_modules/phoenix'))
const WebSocket = require(path.join(root, 'test/integration/node_modules/ws'))

const args = process.argv.slice(2)
const BIN = args[0]
function flag (name, dflt) {
  const i = args.indexOf(name)
  return i > 0 ? args[i + 1] : dflt
}
const HB = flag('--heartbeat-ms', '500')
const DOWN = flag('--down-after-ms', '3000')
const JSON_OUT = flag('--json', null)
if (!BIN) {
  console.error('usage: node bench/cluster_failover.js BIN [--heartbeat-ms N] [--down-after-ms N] [--json FILE]')
  process.exit(2)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => Number(process.hrtime.bigint() / 1000000n)

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)) })
    s.on('error', reject)
  })
}

const procs = new Set()
function killAll () {
  for (const p of procs) {
    try { process.kill(p.pid, 'SIGCONT') } catch (_) {}
    try { p.kill('SIGKILL') } catch (_) {}
  }
}
process.on('exit', killAll)

class Node {
  constructor (i, port, cport, peers) {
    this.name = `node${i}@127.0.0.1`
    this.port = port
    this.listen = `tcp://127.0.0.1:${cport}`
    this.peers = peers
  }

  start () {
    const a = ['--name', this.name, '--port', String(this.port), '--cluster-listen', this.listen,
      '--heartbeat-ms', HB, '--down-after-ms', DOWN, '--log-level', 'warning']
    if (this.peers.length) a.push('--peers', this.peers.join(','))
    this.proc = spawn(BIN, a, { stdio: ['ignore', 'ignore', 'inherit'] })
    procs.add(this.proc)
    this.proc.on('exit', () => procs.delete(this.proc))
    this.exited = new Promise((resolve) => this.proc.on('exit', resolve))
  }

  async members () {
    try {
      const r = await fetch(`http://127.0.0.1:${this.port}/api/cluster`, { signal: AbortSignal.timeout(1000) })
      const j = await r.json()
      const up = {}
      for (const m of j.members || []) up[m.name] = m.up !== false
      return up
    } catch (_) { return null }
  }
}

// Polls cond every 10 ms; returns the ms it took, or throws after limit.
async function until (what, cond, limit = 30000) {
  const t0 = now()
  while (!(await cond())) {
    if (now() - t0 > limit) throw new Error(`timed out: ${what}`)
    await sleep(10)
  }
  return now() - t0
}

function presenceClient (node, user) {
  const socket = new Socket(`ws://127.0.0.1:${node.port}/socket`, {
    transport: WebSocket,
    reconnectAfterMs: () => 100,
    rejoinAfterMs: () => 100,
    heartbeatIntervalMs: 30000
  })
  socket.connect()
  const channel = socket.channel('presence:failover', { name: user })
  const presence = new Presence(channel)
  channel.join()
  return { socket, presence, keys: () => presence.list((k) => k) }
}

async function main () {
  const ports = []
  for (let i = 0; i < 6; i++) ports.push(await freePort())
  const addrs = [0, 1, 2].map((i) => `tcp://127.0.0.1:${ports[3 + i]}`)
  const nodes = [0, 1, 2].map((i) => new Node(i + 1, ports[i], ports[3 + i], addrs.filter((_, j) => j !== i)))
  nodes.forEach((n) => n.start())
  const [n1, n2, n3] = nodes
  await until('a full mesh', async () => {
    for (const n of nodes) {
      const m = await n.members()
      if (!m || Object.values(m).filter(Boolean).length !== 2) return false
    }
    return true
  })
  // Presence: one member per node (the presence channel's key is the user).
  const c = [presenceClient(n1, 'u1'), presenceClient(n2, 'u2'), presenceClient(n3, 'u3')]
  const lists = (cl, key) => cl.keys().some((k) => k.includes(key))
  await until('presence converged', async () => ['u1', 'u2', 'u3'].every((u) => c.every((cl) => lists(cl, u))))

  const fig = {}
  // kill -9
  let t0 = now()
  n3.proc.kill('SIGKILL')
  const down9 = until('node 3 down after kill -9', async () => (await n1.members())?.[n3.name] === false)
  const leave9 = until('u3 left after kill -9', async () => !lists(c[0], 'u3'))
  await down9; fig.kill9_down_ms = now() - t0
  await leave9; fig.kill9_presence_leave_ms = now() - t0
  await n3.exited
  // restart
  t0 = now()
  n3.start()
  await until('node 3 up after restart', async () => (await n1.members())?.[n3.name] === true)
  fig.restart_up_ms = now() - t0
  await until('u3 back after restart', async () => lists(c[0], 'u3'))
  fig.restart_presence_ms = now() - t0
  // SIGSTOP / SIGCONT
  t0 = now()
  process.kill(n2.proc.pid, 'SIGSTOP')
  const downS = until('node 2 down after SIGSTOP', async () => (await n1.members())?.[n2.name] === false)
  const leaveS = until('u2 left after SIGSTOP', async () => !lists(c[0], 'u2'))
  await downS; fig.sigstop_down_ms = now() - t0
  await leaveS; fig.sigstop_presence_leave_ms = now() - t0
  t0 = now()
  process.kill(n2.proc.pid, 'SIGCONT')
  await until('node 2 up after SIGCONT', async () => (await n1.members())?.[n2.name] === true)
  fig.sigcont_up_ms = now() - t0
  await until('presence converged after SIGCONT', async () => ['u1', 'u2', 'u3'].every((u) => c.every((cl) => lists(cl, u))))
  fig.sigcont_presence_converged_ms = now() - t0

  for (const [k, v] of Object.entries(fig)) console.log(`${k.padEnd(32)} ${v}`)
  const out = JSON.stringify({ heartbeat_ms: Number(HB), down_after_ms: Number(DOWN), ...fig })
  console.log(out)
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, out + '\n')
  c.forEach((cl) => cl.socket.disconnect())
  killAll()
}

main().then(() => process.exit(0), (err) => { console.error(`cluster_failover: ${err.message}`); killAll(); process.exit(1) })
