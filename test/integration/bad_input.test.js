'use strict'
// Bad input over real sockets: odd connect queries (%00 in params, nested
// keys, bytes that are not UTF-8), garbage instead of an HTTP request, oversized,
// unmasked and undecodable WebSocket frames, a wrong-arity V2 message,
// topics that are not strings, messages with a stale join_ref and an event
// no handle_in clause matches.  Each case checks what the offender gets
// (the same as Phoenix on Bandit) and that a well-behaved client of the same
// node keeps receiving its broadcasts.

const test = require('node:test')
const assert = require('node:assert/strict')
const {
  PHX_URL, RawClient, TcpClient, encodeFrame, postJSON, getToken, uniq, waitFor
} = require('./lib')

const T = { timeout: 20000 }
const OP_TEXT = 1

// The well-behaved client: joined to room:lobby for the whole file.
let watcher = null
let watcherJoinRef = null

test.before(async () => {
  watcher = await RawClient.connect()
  watcherJoinRef = (await watcher.joinOk('room:lobby')).joinRef
})

test.after(() => { if (watcher) watcher.close() })

// Asserts that the watcher is still connected and receives a broadcast of
// room:lobby (from POST /api/broadcast) and replies to its own pushes.
async function assertWatcherAlive () {
  assert.ok(watcher.isOpen, 'the well-behaved client must stay connected')
  const marker = uniq('probe-')
  const res = await postJSON('/api/broadcast', { topic: 'room:lobby', event: 'probe', payload: { marker } })
  assert.deepEqual(res.json, { ok: true })
  const m = await watcher.next((x) => x.event === 'probe' && x.payload && x.payload.marker === marker, 3000, 'the probe broadcast')
  assert.deepEqual(m.raw, [null, null, 'room:lobby', 'probe', { marker }])
  const pong = await watcher.request('room:lobby', 'ping', { marker }, watcherJoinRef)
  assert.deepEqual(pong.payload, { status: 'ok', response: { marker } })
  assert.equal(watcher.all.filter((x) => x.event === 'phx_error').length, 0, 'no phx_error on the well-behaved client')
}

test('garbage bytes instead of an HTTP request: 400 and the connection is closed', T, async (t) => {
  const c = await TcpClient.connect()
  t.after(() => c.destroy())
  c.write(Buffer.from('\x16\x03\x01\x00\xa5\x01\x00\x00\xa1 garbage \x00\xff\r\n\r\n', 'latin1'))
  const head = await c.until((d) => { const s = d.toString('latin1'); return s.includes('\r\n\r\n') && s }, 5000, 'an HTTP response')
  assert.match(head, /^HTTP\/1\.[01] 400 /)
  await c.waitEnd(5000)
  await assertWatcherAlive()
})

// Phoenix (WebSockAdapter) takes messages of up to 10,000,000 bytes.
const MAX_FRAME = 10000000

test('a frame larger than the limit closes the WebSocket with 1009', T, async (t) => {
  const c = await TcpClient.connect()
  t.after(() => c.destroy())
  await c.upgrade()
  // Only the header: it claims a 16 MiB text frame, over the 10,000,000-byte limit.
  c.write(encodeFrame(OP_TEXT, Buffer.alloc(0), { length: 16 * 1024 * 1024 }).subarray(0, 14))
  assert.equal(await c.closeCode(), 1009)
  await c.waitEnd(5000)
  await assertWatcherAlive()
})

test('one byte over the limit gets 1009 from the frame header', T, async (t) => {
  const c = await TcpClient.connect()
  t.after(() => c.destroy())
  await c.upgrade()
  c.write(encodeFrame(OP_TEXT, Buffer.alloc(0), { length: MAX_FRAME + 1 }).subarray(0, 14))
  assert.equal(await c.closeCode(), 1009)
  await c.waitEnd(5000)
  await assertWatcherAlive()
})

test('a message of limit + 1 bytes sent whole also gets 1009', { timeout: 60000 }, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  c.ws.send('x'.repeat(MAX_FRAME + 1))
  const info = await c.waitClose(20000)
  // The server may reset the connection while the client still writes; when
  // the close frame made it, it must say 1009.
  assert.ok(info.code === 1009 || info.code === 1006, `close code ${info.code}`)
  await assertWatcherAlive()
})

test('a 9.9 MB message is taken and answered: ping echoes its payload', { timeout: 60000 }, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const { joinRef } = await c.joinOk('room:lobby')
  const big = 'b'.repeat(9900000)
  const reply = await c.request('room:lobby', 'ping', { big }, joinRef, 30000)
  assert.equal(reply.payload.status, 'ok')
  assert.equal(reply.payload.response.big.length, big.length)
  assert.ok(reply.payload.response.big === big, 'the payload comes back unchanged')
  // The same client goes on working, and so does the other one.
  const pong = await c.request('room:lobby', 'ping', { after: 1 }, joinRef)
  assert.deepEqual(pong.payload, { status: 'ok', response: { after: 1 } })
  await assertWatcherAlive()
})

// Writes one request on a fresh connection; resolves with { status, body }
// once the server has answered and closed.
async function rawRequest (head) {
  const c = await TcpClient.connect()
  try {
    c.write(head)
    await c.waitEnd(5000)
    const text = c.data.toString('latin1')
    const status = Number((text.match(/^HTTP\/1\.1 (\d{3}) /) || [])[1])
    return { status, body: text.slice(text.indexOf('\r\n\r\n') + 4) }
  } finally { c.destroy() }
}

test('the socket connect runs before the upgrade headers are checked (as Phoenix)', T, async () => {
  const host = `Host: ${new URL(PHX_URL).host}\r\n`
  // A forged token gets 403 even with no upgrade headers at all, or a wrong version.
  let r = await rawRequest(`GET /socket/websocket?vsn=2.0.0&token=forged HTTP/1.1\r\n${host}\r\n`)
  assert.equal(r.status, 403)
  r = await rawRequest(`GET /socket/websocket?vsn=2.0.0&token=forged HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n`)
  assert.equal(r.status, 403)
  // An unsupported vsn too.
  r = await rawRequest(`GET /socket/websocket?vsn=3.0.0 HTTP/1.1\r\n${host}\r\n`)
  assert.equal(r.status, 403)
  // An accepted connect with a wrong version: 400 with WebSockAdapter's reason.
  r = await rawRequest(`GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n`)
  assert.equal(r.status, 400)
  assert.equal(r.body, "'sec-websocket-version' header must equal '13', got [\"8\"]")
  // A POST: 400 before anything else.
  r = await rawRequest(`POST /socket/websocket?vsn=2.0.0&token=forged HTTP/1.1\r\n${host}Content-Length: 0\r\n\r\n`)
  assert.equal(r.status, 400)
  await assertWatcherAlive()
})

test('an unmasked client frame closes the WebSocket with 1002', T, async (t) => {
  const c = await TcpClient.connect()
  t.after(() => c.destroy())
  await c.upgrade()
  c.write(encodeFrame(OP_TEXT, JSON.stringify([null, '1', 'phoenix', 'heartbeat', {}]), { mask: false }))
  assert.equal(await c.closeCode(), 1002)
  await c.waitEnd(5000)
  await assertWatcherAlive()
})

test('invalid JSON closes the WebSocket with 1011, as Phoenix does', T, async (t) => {
  const c = await TcpClient.connect()
  t.after(() => c.destroy())
  await c.upgrade()
  c.write(encodeFrame(OP_TEXT, '{"this is": not json'))
  assert.equal(await c.closeCode(), 1011)
  await c.waitEnd(5000)
  await assertWatcherAlive()
})

test('a V2 array of the wrong arity closes the WebSocket with 1011', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const { joinRef } = await c.joinOk('room:lobby')
  c.ws.send(JSON.stringify([joinRef, '9', 'room:lobby', 'ping']))
  const info = await c.waitClose(5000)
  assert.equal(info.code, 1011)
  await assertWatcherAlive()
})

test('a topic that is not a string gets the answer Phoenix gives, the topic echoed as sent', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const unmatched = { status: 'error', response: { reason: 'unmatched topic' } }
  for (const [topic, event] of [[null, 'phx_join'], [42, 'phx_join'], [1.5, 'new_msg'], [true, 'heartbeat'],
    [['room:', 'lobby'], 'phx_join'], [{ topic: 'room:lobby' }, 'ping']]) {
    const ref = c.nextRef()
    c.ws.send(JSON.stringify(['7', ref, topic, event, {}]))
    const m = await c.next((x) => x.event === 'phx_reply' && x.ref === ref, 3000, `the reply to ${event} on ${JSON.stringify(topic)}`)
    assert.deepEqual(m.raw, [null, ref, topic, 'phx_reply', unmatched])
  }
  const ref = c.nextRef()
  c.ws.send(JSON.stringify(['7', ref, null, 'phx_leave', {}]))
  const m = await c.next((x) => x.event === 'phx_reply' && x.ref === ref, 3000, 'the phx_leave reply')
  assert.deepEqual(m.raw, ['7', ref, null, 'phx_reply', { status: 'ok', response: {} }])
  // V1 (Message.from_map! takes any value as the topic)
  const v1 = await RawClient.connect({ vsn: '1.0.0' })
  t.after(() => v1.close())
  v1.ws.send(JSON.stringify({ topic: 5, event: 'phx_join', payload: {}, ref: '1' }))
  const r1 = await v1.next((x) => x.event === 'phx_reply', 3000, 'the V1 reply')
  assert.deepEqual(r1.raw, { topic: 5, event: 'phx_reply', payload: unmatched, ref: '1' })
  assert.ok(c.isOpen && v1.isOpen, 'both sockets stay open')
  await assertWatcherAlive()
})

test('joining a map topic crashes the socket as Phoenix does (its log line raises): 1011', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  c.ws.send(JSON.stringify(['1', '1', { a: 1 }, 'phx_join', {}]))
  assert.equal((await c.waitClose(5000)).code, 1011)
  await assertWatcherAlive()
})

test('after a rejoin, an event with the old join_ref reaches the current channel; a stale phx_leave is ignored', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const first = await c.joinOk('room:lobby')
  const second = await c.joinOk('room:lobby')
  await c.next((m) => m.event === 'phx_close' && m.join_ref === first.joinRef, 3000, 'phx_close of the first join')
  // ping with the old join_ref: the current channel answers, with its join_ref
  const pong = await c.request('room:lobby', 'ping', { old: true }, first.joinRef)
  assert.deepEqual(pong.raw, [second.joinRef, pong.ref, 'room:lobby', 'phx_reply', { status: 'ok', response: { old: true } }])
  // phx_leave with the old join_ref: no reply, the channel stays joined
  const leaveRef = c.push('room:lobby', 'phx_leave', {}, { joinRef: first.joinRef })
  const still = await c.request('room:lobby', 'ping', { still: true }, second.joinRef)
  assert.deepEqual(still.payload, { status: 'ok', response: { still: true } })
  await c.expectNone((m) => m.ref === leaveRef || m.event === 'phx_close', 300, 'a reply to the stale phx_leave or a phx_close')
  await assertWatcherAlive()
})

test('an unknown event crashes that channel only: phx_error for that topic, nothing else', T, async (t) => {
  const user = uniq('bad')
  const c = await RawClient.connect({ params: { token: await getToken(user) } })
  t.after(() => c.close())
  const lobby = await c.joinOk('room:lobby')
  const mine = await c.joinOk(`room:user:${user}`)
  const ref = c.push('room:lobby', 'no_such_event', { x: 1 }, { joinRef: lobby.joinRef })
  const err = await c.next((m) => m.event === 'phx_error', 3000, 'phx_error')
  assert.deepEqual(err.raw, [lobby.joinRef, lobby.joinRef, 'room:lobby', 'phx_error', {}])
  const pong = await c.request(`room:user:${user}`, 'ping', { still: 1 }, mine.joinRef)
  assert.deepEqual(pong.payload, { status: 'ok', response: { still: 1 } })
  await c.expectNone((m) => (m.event === 'phx_reply' && m.ref === ref) ||
    (m.event === 'phx_error' && m.topic !== 'room:lobby'), 300, 'a reply to the unknown event or another phx_error')
  assert.ok(c.isOpen, 'the socket stays open')
  // The topic can be joined again.
  await c.joinOk('room:lobby')
  await assertWatcherAlive()
})

test('a payload of the wrong shape (new_msg without body) crashes the channel like an unknown event', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const lobby = await c.joinOk('room:lobby')
  c.push('room:lobby', 'new_msg', { text: 'no body' }, { joinRef: lobby.joinRef })
  const err = await c.next((m) => m.event === 'phx_error', 3000, 'phx_error')
  assert.deepEqual(err.raw, [lobby.joinRef, lobby.joinRef, 'room:lobby', 'phx_error', {}])
  await assertWatcherAlive()
})

test('bad HTTP API requests answer 400 and change nothing', T, async () => {
  for (const body of ['not json', '[]', '{"topic":"room:lobby"}', '{"topic":"room:lobby","event":"e","payload":3}']) {
    const res = await postJSON('/api/broadcast', body)
    assert.equal(res.status, 400, `POST /api/broadcast ${body}`)
  }
  assert.equal((await postJSON('/api/disconnect', '{}')).status, 400)
  const { httpGet } = require('./lib')
  assert.equal((await httpGet('/token')).status, 400)
  assert.equal((await httpGet(`/token?user_id=${'x'.repeat(5000)}`)).status, 400)
  await assertWatcherAlive()
})

// The status of a WebSocket upgrade with the raw query q (101 or a refusal).
async function upgradeStatus (q) {
  const c = await TcpClient.connect()
  try {
    c.write(`GET /socket/websocket?${q} HTTP/1.1\r\nHost: ${new URL(PHX_URL).host}\r\n` +
      'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    const head = await c.until((d) => { const s = d.toString('latin1'); return s.includes('\r\n\r\n') && s }, 5000, 'the upgrade response')
    return Number((head.match(/^HTTP\/1\.1 (\d{3}) /) || [])[1])
  } finally { c.destroy() }
}

// What a long-poll GET with the raw query q gets: "410" (a session opened),
// "403" (connect refused) or the HTTP status of an error answer.
async function longpollOutcome (q) {
  const { httpGet } = require('./lib')
  const r = await httpGet(`/socket/longpoll?${q}`)
  if (r.status !== 200) return String(r.status)
  assert.ok(r.json && typeof r.json.status === 'number', `long poll answered ${r.text}`)
  if (r.json.status === 410) assert.equal(typeof r.json.token, 'string')
  return String(r.json.status)
}

// Connect params are byte strings (issue 10): a valid token followed by "%00junk"
// is not the valid token, and "token%00x" is not "token" (whose last value
// wins).  The socket accepted is the token's user's: /api/disconnect closes it.
test('connect params with %00: the whole token is verified, the last "token" wins', T, async (t) => {
  const user = uniq('nul')
  const token = await getToken(user)
  const withJunk = new URLSearchParams([['vsn', '2.0.0'], ['token', `${token}\0junk`]]).toString()
  assert.match(withJunk, /%00junk$/)
  const shadowed = new URLSearchParams([['vsn', '2.0.0'], ['token\0x', 'forged'], ['token', token]]).toString()
  assert.match(shadowed, /token%00x=forged&token=/)
  assert.equal(await upgradeStatus(withJunk), 403)
  assert.equal(await longpollOutcome(withJunk), '403')
  assert.equal(await upgradeStatus(shadowed), 101)
  assert.equal(await longpollOutcome(shadowed), '410')
  // An earlier valid token does not win over a later forged one.
  const lastForged = `vsn=2.0.0&token=${token}&token=forged`
  assert.equal(await upgradeStatus(lastForged), 403)
  assert.equal(await longpollOutcome(lastForged), '403')
  // The socket opened through "token%00x=forged&token=T" is the user's.
  const c = await RawClient.connect({ params: [['token\0x', 'forged'], ['token', token]] })
  t.after(() => c.close())
  assert.ok(c.isOpen)
  const res = await postJSON('/api/disconnect', { user_id: user })
  assert.equal(res.status, 200)
  await waitFor(() => !c.isOpen, 5000, 'the user\'s socket to be disconnected')
  await assertWatcherAlive()
})

// Odd queries, answered as Phoenix 1.7.24 (Plug 1.19.2, Bandit) answers them,
// on the WebSocket upgrade and on the long-poll GET.  <T> is a valid token.
// Plug keeps malformed escapes, refuses a key or value that is not UTF-8
// (400), lets the last value win, and makes "k[]=" / "k[a]=" a list / map,
// which the reference app's connect (Phoenix.Token.verify) and Phoenix's vsn
// parsing crash on (500).
const ODD_QUERIES = [
  // query, WebSocket status, long-poll outcome
  ['a=1&a=2', 101, '410'],
  ['a', 101, '410'],
  ['=1', 101, '410'],
  ['=', 101, '410'],
  ['&&&', 101, '410'],
  ['a==b', 101, '410'],
  ['a=%00', 101, '410'],
  ['a%00b=1', 101, '410'],
  ['a[]=1&a[]=2', 101, '410'],
  ['a[b]=1', 101, '410'],
  ['a=x+y', 101, '410'],
  ['a=%zz', 101, '410'],
  ['a=%', 101, '410'],
  ['a=%2', 101, '410'],
  ['%C3%A9=1', 101, '410'],
  ['a=%ff', 400, '400'],
  ['%ff=1', 400, '400'],
  ['a=%C3', 400, '400'],
  ['a=%ED%A0%80', 400, '400'],
  ['a=%C0%80', 400, '400'],
  ['a=%zz%ff', 400, '400'],
  ['token=<T>', 101, '410'],
  ['token=<T>%00junk', 403, '403'],
  ['token=<T>junk', 403, '403'],
  ['token%00x=bad&token=<T>', 101, '410'],
  ['token=bad&token=<T>', 101, '410'],
  ['token=<T>&token=bad', 403, '403'],
  ['token', 403, '403'],
  ['token=', 403, '403'],
  ['token[]=<T>', 500, '500'],
  ['token[a]=<T>', 500, '500'],
  ['token%5B%5D=x', 500, '500'],
  ['token[]=x&token=<T>', 101, '410'],
  ['token=<T>&token[]=x', 500, '500'],
  ['token[]=x&token=<T>&token[]=y', 101, '410'],
  ['[token]=x', 101, '410'],
  ['token[=x&token=<T>', 101, '410'],
  ['token]=x', 101, '410'],
  ['vsn=2.0.0&vsn=9.0.0', 403, '403'],
  ['vsn=9.0.0&vsn=2.0.0', 101, '410'],
  ['vsn=2.0.0%00', 403, '403'],
  ['vsn[]=2.0.0', 500, '500'],
  ['vsn=1.0.0&vsn[]=x', 500, '500'],
  ['vsn', 403, '403'],
  ['vsn=2.0.1', 101, '410'],
  ['vsn=1.0.9', 101, '410'],
  ['vsn=2.0.1-rc', 101, '410'],
  ['vsn=2.0.0-rc', 403, '403'],
  ['vsn=2.0.0%2Bb', 101, '410'],
  ['vsn=2.0.0+b', 403, '403'],
  ['vsn=2.0.99999999999999999999', 101, '410'],
  ['vsn=2.0.abc', 403, '403'],
  ['vsn=2.0', 403, '403'],
  ['vsn=02.0.0', 403, '403'],
  ['vsn=2.0.01', 403, '403'],
  ['vsn=2.0.1-rc.01', 403, '403'],
  ['vsn=2.0.1-rc.0a', 101, '410'],
  ['vsn=2.0.1-', 403, '403'],
  ['vsn=2.0.0%2Bb..c', 403, '403'],
  ['vsn=2.1.0', 403, '403']
]

test('odd connect queries get the answers Phoenix gives, over WebSocket and long polling', { timeout: 60000 }, async () => {
  const token = await getToken(uniq('odd'))
  const failures = []
  for (const [q, ws, lp] of ODD_QUERIES) {
    const query = q.replaceAll('<T>', token)
    const gotWs = await upgradeStatus(query)
    const gotLp = await longpollOutcome(query)
    if (gotWs !== ws || gotLp !== lp) failures.push(`${q}: websocket ${gotWs} (want ${ws}), long poll ${gotLp} (want ${lp})`)
  }
  assert.deepEqual(failures, [])
  await assertWatcherAlive()
})
