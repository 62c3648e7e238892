'use strict'
// Long polling (/socket/longpoll) with the official phoenix.js client's
// LongPoll transport (over xhr.js) and with raw HTTP requests:
//   - an authenticated session joins room:user:ID; POST /api/disconnect ends
//     it: its presence leaves, the old session token is gone (410) and
//     phoenix.js opens a new session by itself;
//   - presence:lobby-style topics list long-poll and WebSocket members
//     together, and a long-poll member that stops polling (socket.disconnect())
//     leaves when its session expires (Phoenix: 1.5 x the 10 s window without
//     a poll, checked every 15 s, so within 30 s; phx-chat is started with a
//     2 s window for this when PHX_BIN has --longpoll-window-ms);
//   - crash -> phx_error -> phoenix.js rejoins; `slow` replies arrive after
//     quicker ones;
//   - V1 (vsn 1.0.0, and no vsn) with raw requests: a GET opens, a POST
//     carries one JSON object as a plain body, GETs return the replies;
//   - hostile input: forged and missing session tokens, an ndjson line that
//     is not base64, with other sessions undisturbed.
// Every test skips, saying why, while the server answers 404 on
// /socket/longpoll (a server without long polling).

require('./xhr').use()

const http = require('node:http')
const test = require('node:test')
const assert = require('node:assert/strict')
const { Socket, LongPoll, Presence } = require('phoenix')
const fs = require('node:fs')
const { execFileSync } = require('node:child_process')
const { PHX_URL, PHX_BIN, WS_BASE, WebSocket, RawClient, uniq, waitFor, httpGet, postJSON, getToken, freePort, startServer, waitHttp } = require('./lib')

const LP_PATH = '/socket/longpoll'

// Whether the server has long polling: GET /socket/longpoll answers 404 without.
let availability = null
function longPollAvailable () {
  if (!availability) {
    availability = httpGet(`${LP_PATH}?vsn=2.0.0`).then((r) => r.status !== 404, () => false)
  }
  return availability
}

// test() that skips with a clear message when the server has no long polling.
function lpTest (name, opts, fn) {
  test(name, opts, async (t) => {
    if (!(await longPollAvailable())) {
      t.skip(`GET ${PHX_URL}${LP_PATH} answers 404: this server has no long polling yet`)
      return
    }
    return fn(t)
  })
}

// A phoenix.js socket over LongPoll (or over `ws` with transport: WebSocket),
// torn down after the test.
function pxSocket (t, { params = {}, transport = LongPoll, base = WS_BASE } = {}) {
  const socket = new Socket(`${base}/socket`, {
    transport,
    params,
    timeout: 8000,
    reconnectAfterMs: () => 500,
    rejoinAfterMs: () => 500
  })
  socket.opens = []
  socket.closes = 0
  socket.onOpen(() => socket.opens.push(socket.conn && socket.conn.token))
  socket.onClose(() => { socket.closes += 1 })
  t.after(() => {
    try {
      for (const ch of socket.channels) { ch.rejoinTimer.reset(); ch.joinPush.cancelTimeout() }
      socket.reconnectTimer.reset()
      socket.disconnect()
    } catch (_) { /* already down */ }
  })
  return socket
}

function open (socket, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket did not open within ${timeout} ms`)), timeout)
    socket.onOpen(() => { clearTimeout(timer); resolve() })
    socket.connect()
  })
}

// Joins; resolves with the ok response, rejects with the error or a timeout.
function join (channel, timeout = 8000) {
  return new Promise((resolve, reject) => {
    channel.join(timeout)
      .receive('ok', resolve)
      .receive('error', (r) => reject(Object.assign(new Error(`join ${channel.topic} refused: ${JSON.stringify(r)}`), { response: r })))
      .receive('timeout', () => reject(new Error(`join ${channel.topic} timed out`)))
  })
}

// Pushes; resolves with {status, response} of the reply (ok or error).
function push (channel, event, payload, timeout = 8000) {
  return new Promise((resolve, reject) => {
    channel.push(event, payload, timeout)
      .receive('ok', (response) => resolve({ status: 'ok', response }))
      .receive('error', (response) => resolve({ status: 'error', response }))
      .receive('timeout', () => reject(new Error(`${event} on ${channel.topic}: no reply within ${timeout} ms`)))
  })
}

// A server whose long-poll sessions expire soon: phx-chat (PHX_BIN) started
// with --longpoll-window-ms 2000 when it has that flag (sessions end after
// 3 s without a poll), stopped after the test; else the server under test
// (Phoenix's 10 s window: an expiry within 30 s).  Resolves its base URL.
async function shortWindowServer (t) {
  let help = ''
  try {
    if (fs.existsSync(PHX_BIN)) help = execFileSync(PHX_BIN, ['--help'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) { help = String(e.stdout || '') }
  if (!help.includes('--longpoll-window-ms')) return PHX_URL
  const port = await freePort()
  const srv = startServer(['--port', String(port), '--longpoll-window-ms', '2000', '--log-level', 'warning'])
  t.after(async () => {
    srv.proc.kill('SIGTERM')
    const timer = setTimeout(() => srv.proc.kill('SIGKILL'), 10000)
    await srv.exited
    clearTimeout(timer)
  })
  const base = `http://127.0.0.1:${port}`
  await waitHttp(base)
  return base
}

// The keys phoenix.js's Presence lists for a channel.
function tracked (channel) {
  const p = new Presence(channel)
  return { keys: () => p.list((key) => key) }
}

// ---------------------------------------------------------------------------
// Raw long polling: exact requests, exact answers.

// One HTTP request on a connection of its own (agent: false), so that a
// connection the server closes after an error answer is never reused by
// another client of the test (fetch's pool is shared by phoenix.js here).
function request (method, path, { headers = {}, body, timeout = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(PHX_URL + path, { method, headers, agent: false, timeout }, (res) => {
      const chunks = []
      res.on('data', (d) => chunks.push(d))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let json = null
        try { json = JSON.parse(text) } catch (_) { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeout} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}

class RawLP {
  constructor (vsn) {
    this.vsn = vsn
    this.token = null
    this.messages = [] // decoded messages received and not yet taken
  }

  url (token = this.token) {
    const qs = new URLSearchParams()
    if (this.vsn != null) qs.set('vsn', this.vsn)
    if (token != null) qs.set('token', token)
    const q = qs.toString()
    return `${LP_PATH}${q ? '?' + q : ''}`
  }

  // The first GET: a new session, {"status":410,"token":...}.
  async open (params = {}) {
    const qs = new URLSearchParams(params)
    if (this.vsn != null) qs.set('vsn', this.vsn)
    const res = await request('GET', `${LP_PATH}?${qs}`)
    assert.equal(res.status, 200, `opening GET answered HTTP ${res.status}: ${res.text}`)
    assert.equal(res.json && res.json.status, 410, `opening GET: ${res.text}`)
    assert.equal(typeof res.json.token, 'string')
    assert.deepEqual(res.json.messages, [])
    this.token = res.json.token
    return res.json
  }

  // POSTs a body as is; resolves with the HTTP answer.
  post (body, contentType = 'application/json', token = this.token) {
    return request('POST', this.url(token), { headers: { 'content-type': contentType }, body })
  }

  // One GET; keeps the messages it returns (JSON-decoded).
  async poll () {
    const res = await request('GET', this.url(), { timeout: 30000 })
    assert.equal(res.status, 200, `poll answered HTTP ${res.status}: ${res.text}`)
    assert.ok(res.json && [200, 204].includes(res.json.status), `poll: ${res.text}`)
    if (res.json.status === 200) {
      assert.ok(Array.isArray(res.json.messages) && res.json.messages.length > 0, `poll: ${res.text}`)
      for (const m of res.json.messages) {
        assert.equal(typeof m, 'string', `messages are serialized frames: ${res.text}`)
        this.messages.push(JSON.parse(m))
      }
    }
    return res.json
  }

  // Polls until a received message matches; returns and removes it.
  async next (pred, timeout = 15000, what = 'a matching message') {
    const deadline = Date.now() + timeout
    for (;;) {
      const i = this.messages.findIndex(pred)
      if (i >= 0) return this.messages.splice(i, 1)[0]
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeout} ms; got ${JSON.stringify(this.messages)}`)
      await this.poll()
    }
  }
}

// V1 messages are objects; V2 are arrays [join_ref, ref, topic, event, payload].
const v2 = (m) => ({ join_ref: m[0], ref: m[1], topic: m[2], event: m[3], payload: m[4] })

// ---------------------------------------------------------------------------

lpTest('an authenticated long-poll socket joins its room; /api/disconnect ends its session and its presence', { timeout: 60000 }, async (t) => {
  const user = uniq('lpu')
  const lp = pxSocket(t, { params: { token: await getToken(user) } })
  await open(lp)
  const own = lp.channel(`room:user:${user}`, {})
  assert.deepEqual(await join(own), {})
  assert.deepEqual(await push(own, 'ping', { n: 1 }), { status: 'ok', response: { n: 1 } })
  await assert.rejects(join(lp.channel(`room:user:${user}x`, {})), (e) => {
    assert.deepEqual(e.response, { reason: 'unauthorized' })
    return true
  })

  // A WebSocket observer of a presence topic that the long-poll user joins.
  const topic = `presence:${uniq('lpd')}`
  const obs = await RawClient.connect()
  t.after(() => obs.close())
  await obs.joinOk(topic, { name: uniq('obs') })
  await obs.next((m) => m.event === 'presence_state', 5000, 'presence_state')
  await join(lp.channel(topic, { name: 'ignored: keyed by user_id' }))
  await obs.next((m) => m.event === 'presence_diff' && m.payload.joins[user], 5000, `the join of ${user}`)

  const oldToken = lp.conn.token
  assert.equal(typeof oldToken, 'string')
  assert.equal(lp.opens.length, 1)
  assert.equal(lp.closes, 0)
  const res = await postJSON('/api/disconnect', { user_id: user })
  assert.equal(res.status, 200, res.text)
  // Its channels end with the session: the observer sees the member leave.
  await obs.next((m) => m.event === 'presence_diff' && m.payload.leaves[user], 5000, `the leave of ${user}`)
  // The old session token is gone...
  const gone = await request('POST', `${LP_PATH}?vsn=2.0.0&token=${encodeURIComponent(oldToken)}`, {
    headers: { 'content-type': 'application/x-ndjson' }, body: JSON.stringify([null, '9', 'room:lobby', 'ping', {}])
  })
  assert.equal(gone.status, 200, gone.text)
  assert.deepEqual(gone.json, { status: 410 })
  // ...and phoenix.js sees its socket close, then opens a new session by
  // itself.  (Phoenix: the pending poll ends by the 10 s window; the next
  // GET carries the user token and the dead session's token under the same
  // key, the later one wins, so the session token is given to connect as a
  // user token: 403, which phoenix.js takes as a close; it reconnects with
  // the user token alone.)
  await waitFor(() => lp.closes >= 1, 25000, 'phoenix.js to see its long-poll socket close', 50)
  await waitFor(() => lp.opens.length >= 2, 10000, 'phoenix.js to open a new long-poll session', 50)
  assert.notEqual(lp.conn.token, oldToken)
})

lpTest('presence: long-poll and WebSocket members see each other; a long-poll member that stops polling leaves at its session expiry', { timeout: 75000 }, async (t) => {
  const base = (await shortWindowServer(t)).replace(/^http/, 'ws')
  t.diagnostic(`server: ${base}`)
  const topic = `presence:${uniq('lpp')}`
  const lpName = uniq('lpname')
  const wsName = uniq('wsname')
  const lp = pxSocket(t, { base })
  const ws = pxSocket(t, { transport: WebSocket, base })
  await Promise.all([open(lp), open(ws)])
  const lpCh = lp.channel(topic, { name: lpName })
  const wsCh = ws.channel(topic, { name: wsName })
  const lpP = tracked(lpCh)
  const wsP = tracked(wsCh)
  const leaves = []
  wsCh.on('presence_diff', (d) => { for (const k of Object.keys(d.leaves)) leaves.push(k) })
  await join(lpCh)
  await join(wsCh)
  const both = (p) => p.keys().includes(lpName) && p.keys().includes(wsName)
  await waitFor(() => both(lpP), 10000, `the long-poll member to list both (has ${JSON.stringify(lpP.keys())})`)
  await waitFor(() => both(wsP), 10000, `the WebSocket member to list both (has ${JSON.stringify(wsP.keys())})`)

  // A message of the WebSocket member reaches the long-poll member (room:lobby).
  const room = lp.channel('room:lobby', {})
  const got = []
  room.on('new_msg', (p) => got.push(p.body))
  await join(room)
  const wsRoom = ws.channel('room:lobby', {})
  await join(wsRoom)
  const body = uniq('lp-presence-')
  wsRoom.push('new_msg', { body })
  await waitFor(() => got.includes(body), 15000, 'the long-poll member to get the WebSocket member\'s message')

  // The long-poll client stops polling: nothing tells the server, so the
  // member stays until the session expires.
  const t0 = Date.now()
  lp.disconnect()
  await waitFor(() => !wsP.keys().includes(lpName), 45000, `${lpName} to leave at its session's expiry`, 100)
  assert.ok(leaves.includes(lpName), 'the leave came as a presence_diff')
  assert.ok(wsP.keys().includes(wsName), 'the WebSocket member still lists itself')
  t.diagnostic(`the long-poll member left ${Date.now() - t0} ms after it stopped polling`)
})

lpTest('crash over long polling: phx_error, then phoenix.js rejoins and the channel answers again', { timeout: 30000 }, async (t) => {
  const lp = pxSocket(t)
  await open(lp)
  const ch = lp.channel('room:lobby', {})
  let joins = 0
  let errors = 0
  ch.onError(() => { errors += 1 })
  await new Promise((resolve, reject) => {
    ch.join(8000).receive('ok', () => { joins += 1; resolve() }).receive('error', reject).receive('timeout', () => reject(new Error('join timed out')))
  })
  ch.push('crash', {})
  await waitFor(() => errors >= 1, 10000, 'phx_error on room:lobby')
  await waitFor(() => joins >= 2, 10000, 'phoenix.js to rejoin room:lobby')
  assert.deepEqual(await push(ch, 'ping', { again: true }), { status: 'ok', response: { again: true } })
  assert.equal(lp.connectionState(), 'open', 'the crash of a channel leaves the session open')
  assert.equal(lp.opens.length, 1, 'no new session')
})

lpTest('slow replies arrive over long polling, after a quicker reply pushed later', { timeout: 30000 }, async (t) => {
  const lp = pxSocket(t)
  await open(lp)
  const ch = lp.channel('room:lobby', {})
  await join(ch)
  const order = []
  const slow = push(ch, 'slow', { ms: 1500 }).then((r) => { order.push('slow'); return r })
  const quick = push(ch, 'ping', { q: 1 }).then((r) => { order.push('ping'); return r })
  assert.deepEqual(await quick, { status: 'ok', response: { q: 1 } })
  assert.deepEqual(await slow, { status: 'ok', response: {} })
  assert.deepEqual(order, ['ping', 'slow'])
  // Several slow replies in flight at once all arrive.
  const many = await Promise.all([300, 600, 900].map((ms) => push(ch, 'slow', { ms })))
  for (const r of many) assert.deepEqual(r, { status: 'ok', response: {} })
})

for (const vsn of ['1.0.0', null]) {
  lpTest(`V1 over long polling (${vsn ? 'vsn=1.0.0' : 'no vsn'}), with raw requests: JSON objects in plain POST bodies`, { timeout: 40000 }, async (t) => {
    const c = new RawLP(vsn)
    await c.open()
    const post = async (msg) => {
      const res = await c.post(JSON.stringify(msg))
      assert.equal(res.status, 200, res.text)
      assert.deepEqual(res.json, { status: 200 })
    }
    await post({ topic: 'room:lobby', event: 'phx_join', payload: {}, ref: '1', join_ref: '1' })
    const joined = await c.next((m) => m.event === 'phx_reply' && m.ref === '1', 15000, 'the join reply')
    assert.ok(!Array.isArray(joined), 'V1 frames are objects')
    assert.equal(joined.topic, 'room:lobby')
    assert.deepEqual(joined.payload, { status: 'ok', response: {} })
    await post({ topic: 'room:lobby', event: 'ping', payload: { v: 1 }, ref: '2', join_ref: '1' })
    const pong = await c.next((m) => m.event === 'phx_reply' && m.ref === '2', 15000, 'the ping reply')
    assert.deepEqual(pong.payload, { status: 'ok', response: { v: 1 } })
    const body = uniq('v1-lp-')
    await post({ topic: 'room:lobby', event: 'new_msg', payload: { body }, ref: '3', join_ref: '1' })
    const b = await c.next((m) => m.event === 'new_msg' && m.payload.body === body, 15000, 'the broadcast')
    assert.equal(b.topic, 'room:lobby')
    assert.equal(b.ref, null)
    // A heartbeat over long polling is answered like over WebSocket.
    await post({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '4' })
    const hb = await c.next((m) => m.event === 'phx_reply' && m.ref === '4', 15000, 'the heartbeat reply')
    assert.equal(hb.topic, 'phoenix')
    assert.deepEqual(hb.payload, { status: 'ok', response: {} })
  })
}

lpTest('hostile input over HTTP: forged and missing session tokens, ndjson that is not base64; other sessions undisturbed', { timeout: 40000 }, async (t) => {
  // A bystander: phoenix.js over long polling, joined to its own room.
  const user = uniq('lph')
  const by = pxSocket(t, { params: { token: await getToken(user) } })
  await open(by)
  const byCh = by.channel(`room:user:${user}`, {})
  const byGot = []
  byCh.on('news', (p) => byGot.push(p.n))
  await join(byCh)

  // A POST with a forged token, or with none: {"status":410}.
  const forged = 'SFMyNTY.' + Buffer.from('not a session').toString('base64url') + '.AAAA'
  for (const token of [forged, 'garbage', null]) {
    const qs = token == null ? 'vsn=2.0.0' : `vsn=2.0.0&token=${encodeURIComponent(token)}`
    const res = await request('POST', `${LP_PATH}?${qs}`, {
      headers: { 'content-type': 'application/x-ndjson' }, body: JSON.stringify([null, '1', 'room:lobby', 'phx_join', {}])
    })
    assert.equal(res.status, 200, `POST with token ${token}: HTTP ${res.status} ${res.text}`)
    assert.deepEqual(res.json, { status: 410 }, `POST with token ${token}`)
  }
  // A GET with a forged token finds no session, so it would open one with
  // the query's params, where `token` is then the user token given to
  // UserSocket.connect: a bad one refuses the connection, {"status":403}.
  const refused = await request('GET', `${LP_PATH}?vsn=2.0.0&token=${encodeURIComponent(forged)}`)
  assert.equal(refused.status, 200, refused.text)
  assert.deepEqual(refused.json, { status: 403 })

  // A raw V2 session: an ndjson batch whose second line is not base64 (nor a
  // JSON array): a clear error (Phoenix: HTTP 500, after handling the lines
  // before it; a server may also refuse the whole batch, e.g. 400), and the
  // session goes on.
  const c = new RawLP('2.0.0')
  await c.open()
  const join1 = await c.post(JSON.stringify([null, '1', 'room:lobby', 'phx_join', {}]), 'application/x-ndjson')
  assert.deepEqual(join1.json, { status: 200 }, join1.text)
  await c.next((m) => Array.isArray(m) && m[1] === '1' && m[3] === 'phx_reply', 15000, 'the join reply')
  const bad = await c.post(JSON.stringify(['1', '2', 'room:lobby', 'ping', { before: true }]) + '\n%%% not base64 %%%', 'application/x-ndjson')
  const clear = bad.status >= 400 || (bad.json && typeof bad.json.status === 'number' && bad.json.status >= 400)
  assert.ok(clear, `a line that is not base64 gets an error status, got HTTP ${bad.status}: ${bad.text}`)
  // The session itself still works.
  const again = await c.post(JSON.stringify(['1', '3', 'room:lobby', 'ping', { after: true }]), 'application/x-ndjson')
  assert.deepEqual(again.json, { status: 200 }, again.text)
  const after = v2(await c.next((m) => Array.isArray(m) && m[1] === '3', 15000, 'the reply after the bad batch'))
  assert.deepEqual(after.payload, { status: 'ok', response: { after: true } })

  // The bystander was not disturbed: same session, still receiving.
  for (let n = 1; n <= 3; n++) {
    const res = await postJSON('/api/broadcast', { topic: `room:user:${user}`, event: 'news', payload: { n } })
    assert.equal(res.status, 200, res.text)
  }
  await waitFor(() => byGot.length >= 3, 15000, 'the bystander to receive three broadcasts')
  assert.deepEqual(byGot, [1, 2, 3])
  assert.deepEqual(await push(byCh, 'ping', {}), { status: 'ok', response: {} })
  assert.equal(by.opens.length, 1, 'the bystander kept its session')
  assert.equal(by.closes, 0)
})
