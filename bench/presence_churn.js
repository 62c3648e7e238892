'use strict'
// presence_churn.js: the presence ghost scenario, as WebSocket clients would
// play it against the chat app's PresenceChannel (examples/chat).
//
//   N members join presence:churn at J joins/s; then for D seconds, C members
//   close their sockets and C new ones join every second.  An observer client
//   keeps phoenix.js's view (presence_state, then syncDiff on every diff).
//   At the end: the observer's view and a fresh presence_state are compared
//   with the members whose sockets are open (ghosts: listed, socket gone;
//   missing: socket open, not listed), and join and leave latencies are
//   printed.
//
//   NODE_PATH=shared/conformance/node_modules node bench/presence_churn.js \
//       [url] [N] [J] [C] [D]     (defaults: ws://127.0.0.1:4000 1000 200 100 20)
//
// Node parses every frame every member receives: keep N x diffs/s within
// what one Node thread parses (the server coalesces a topic's diffs over
// 20 ms, so at most 50 diffs/s per member).

const WebSocket = require('ws')

const [url = 'ws://127.0.0.1:4000', N = '1000', J = '200', C = '100', D = '20'] =
  process.argv.slice(2)
const n = +N, joinRate = +J, churn = +C, secs = +D
const topic = 'presence:churn'
const start = Date.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let nextId = 0
const live = new Map() // name -> member (socket open and joined)
const joinLat = []
const leaveLat = []
const closedAt = new Map() // name -> ms when its socket was closed
let joinTimeouts = 0
let joinErrors = 0

// Members only parse until their join reply: after it, the diffs they get
// are counted by the server's frames but not decoded here (Node is the
// bottleneck otherwise).
function open (name, onMessage, always = true) {
  const ws = new WebSocket(`${url}/socket/websocket?vsn=2.0.0`)
  let parse = true
  ws.on('error', () => {})
  ws.on('message', (data) => {
    if (!parse) return
    const m = JSON.parse(data.toString())
    onMessage(m)
    if (!always && m[3] === 'phx_reply') parse = false
  })
  return ws
}

function member () {
  const name = `u${nextId++}`
  const t0 = Date.now()
  return new Promise((resolve) => {
    let done = false
    const finish = (ok) => { if (!done) { done = true; resolve(ok) } }
    const timer = setTimeout(() => { joinTimeouts++; ws.terminate(); finish(false) }, 10000)
    const ws = open(name, (m) => {
      if (m && m[1] === '1' && m[3] === 'phx_reply') {
        clearTimeout(timer)
        if (m[4].status === 'ok') {
          joinLat.push(Date.now() - t0)
          live.set(name, ws)
          finish(true)
        } else {
          joinErrors++
          ws.terminate()
          finish(false)
        }
      }
    }, false)
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', topic, 'phx_join', { name }])))
    const hb = setInterval(() => {
      if (ws.readyState === 1) ws.send(JSON.stringify([null, 'hb', 'phoenix', 'heartbeat', {}]))
    }, 30000)
    ws.on('close', () => clearInterval(hb))
  })
}

// The observer: phoenix.js's Presence.syncState/syncDiff on refs per key.
const view = new Map() // key -> Set(phx_ref)
let gotState = false
const pending = []
function applyDiff (d, now) {
  for (const [k, { metas }] of Object.entries(d.joins)) {
    const s = view.get(k) || new Set()
    for (const m of metas) s.add(m.phx_ref)
    view.set(k, s)
  }
  for (const [k, { metas }] of Object.entries(d.leaves)) {
    const s = view.get(k)
    if (!s) continue
    for (const m of metas) s.delete(m.phx_ref)
    if (s.size === 0) {
      view.delete(k)
      if (closedAt.has(k)) leaveLat.push(now - closedAt.get(k))
    }
  }
}
function observer () {
  return new Promise((resolve) => {
    const ws = open('observer', (m) => {
      const now = Date.now()
      if (m[3] === 'phx_reply' && m[1] === 'o1') resolve(ws)
      if (m[3] === 'presence_state') {
        for (const [k, { metas }] of Object.entries(m[4])) view.set(k, new Set(metas.map((x) => x.phx_ref)))
        gotState = true
        for (const d of pending.splice(0)) applyDiff(d, now)
      }
      if (m[3] === 'presence_diff') {
        if (gotState) applyDiff(m[4], now)
        else pending.push(m[4])
      }
    })
    ws.on('open', () => ws.send(JSON.stringify(['o1', 'o1', topic, 'phx_join', { name: 'observer' }])))
    ws.on('close', (code) => console.log(`observer: socket closed (${code}) after ${Date.now() - start} ms`))
    const hb = setInterval(() => {
      if (ws.readyState === 1) ws.send(JSON.stringify([null, 'hb', 'phoenix', 'heartbeat', {}]))
    }, 30000)
    ws.on('close', () => clearInterval(hb))
  })
}

function fresh () {
  return new Promise((resolve) => {
    const ws = open('fresh', (m) => {
      if (m[3] === 'presence_state') { ws.close(); resolve(m[4]) }
    })
    ws.on('open', () => ws.send(JSON.stringify(['f1', 'f1', topic, 'phx_join', { name: 'fresh' }])))
  })
}

function pct (v, p) {
  if (!v.length) return NaN
  const s = [...v].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]
}

async function main () {
  const obs = await observer()
  const t0 = Date.now()
  const joins = []
  for (let i = 0; i < n; i++) {
    joins.push(member())
    await sleep(1000 / joinRate)
  }
  await Promise.all(joins)
  console.log(`fill: ${live.size}/${n} joined in ${Date.now() - t0} ms; join p50 ${pct(joinLat, 50)} ms p99 ${pct(joinLat, 99)} ms; timeouts ${joinTimeouts}`)
  joinLat.length = 0
  for (let s = 0; s < secs; s++) {
    const tick = Date.now()
    const names = [...live.keys()]
    for (let i = 0; i < churn && names.length; i++) {
      const at = Math.floor(Math.random() * names.length)
      const name = names.splice(at, 1)[0]
      const ws = live.get(name)
      live.delete(name)
      closedAt.set(name, Date.now())
      if (i % 2) ws.terminate(); else ws.close()
    }
    for (let i = 0; i < churn; i++) member()
    await sleep(Math.max(0, 1000 - (Date.now() - tick)))
  }
  await sleep(3000)
  const state = await fresh()
  await sleep(500)
  const liveNames = new Set(live.keys())
  const stateKeys = Object.keys(state).filter((k) => k !== 'observer' && k !== 'fresh')
  const viewKeys = [...view.keys()].filter((k) => k !== 'observer' && k !== 'fresh')
  const ghostsState = stateKeys.filter((k) => !liveNames.has(k)).length
  const missingState = [...liveNames].filter((k) => !(k in state)).length
  const ghostsView = viewKeys.filter((k) => !liveNames.has(k)).length
  const missingView = [...liveNames].filter((k) => !view.has(k)).length
  console.log(`churn: ${secs} s of ${churn} closes + ${churn} joins/s; join p50 ${pct(joinLat, 50)} ms p99 ${pct(joinLat, 99)} ms; timeouts ${joinTimeouts}, errors ${joinErrors}`)
  console.log(`leave (close -> observer's diff): p50 ${pct(leaveLat, 50)} ms p99 ${pct(leaveLat, 99)} ms max ${pct(leaveLat, 100)} ms over ${leaveLat.length}`)
  console.log(`end: ${liveNames.size} members open; presence_state: ${stateKeys.length} listed, ${ghostsState} ghosts, ${missingState} missing; observer's view: ${viewKeys.length} listed, ${ghostsView} ghosts, ${missingView} missing`)
  for (const ws of live.values()) ws.terminate()
  obs.terminate()
  process.exit(ghostsState || missingState || ghostsView || missingView ? 1 : 0)
}

main()
