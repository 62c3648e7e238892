'use strict'
// Broadcast delivery through PubSub's per-scheduler partitions and the
// fastlane's direct path: every subscriber gets every broadcast once and in
// the publisher's order; a reply and a broadcast from one channel keep their
// order; binary broadcasts reach V2 subscribers as binary frames and V1
// subscribers are skipped without losing later JSON broadcasts.

const test = require('node:test')
const assert = require('node:assert/strict')
const { RawClient, uniq, waitFor } = require('./lib')

const T = { timeout: 30000 }

// A V2 binary push frame: [0, len(join_ref), len(ref), len(topic), len(event)] + strings + data.
function binaryPush (joinRef, ref, topic, event, data) {
  const head = Buffer.from([0, joinRef.length, ref.length, topic.length, event.length])
  return Buffer.concat([head, Buffer.from(joinRef + ref + topic + event), data])
}

// Reads a V2 binary broadcast frame: [2, len(topic), len(event)] + strings + data.
function readBroadcast (raw) {
  if (raw[0] !== 2) return null
  const tl = raw[1]; const el = raw[2]
  return {
    topic: raw.subarray(3, 3 + tl).toString(),
    event: raw.subarray(3 + tl, 3 + tl + el).toString(),
    data: raw.subarray(3 + tl + el)
  }
}

test('every subscriber gets every broadcast once, in the publisher\'s order', T, async (t) => {
  const topic = `room:lobby` // the only open room; other tests' traffic is filtered by body
  const tag = uniq('seq')
  const subs = []
  for (let i = 0; i < 40; i++) {
    const c = await RawClient.connect({ vsn: i % 5 === 0 ? '1.0.0' : '2.0.0' })
    t.after(() => c.close())
    await c.joinOk(topic)
    subs.push(c)
  }
  const pub = subs[1]
  const M = 300
  for (let k = 0; k < M; k++) pub.push(topic, 'new_msg', { body: `${tag}:${k}` })
  for (const c of subs) {
    const mine = () => c.all.filter((m) => m.event === 'new_msg' && m.payload && typeof m.payload.body === 'string' && m.payload.body.startsWith(tag + ':'))
    await waitFor(() => mine().length >= M, 15000, `${M} broadcasts at one subscriber`)
    const seq = mine().map((m) => Number(m.payload.body.slice(tag.length + 1)))
    assert.deepEqual(seq, [...Array(M).keys()], 'in order, none lost, none twice')
  }
})

test('a reply and a broadcast from one channel arrive in the order they were made', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const other = await RawClient.connect()
  t.after(() => other.close())
  const { joinRef } = await c.joinOk('room:lobby')
  await other.joinOk('room:lobby')
  const tag = uniq('ord')
  for (let k = 0; k < 100; k++) {
    c.push('room:lobby', 'ping', { k }, { joinRef, ref: `${tag}-${k}` })
    c.push('room:lobby', 'new_msg', { body: `${tag}:${k}` }, { joinRef })
  }
  await waitFor(() => c.all.filter((m) => m.event === 'new_msg' && m.payload.body.startsWith(tag)).length === 100, 10000, 'the 100 broadcasts')
  const order = c.all
    .filter((m) => (m.event === 'phx_reply' && String(m.ref).startsWith(tag)) || (m.event === 'new_msg' && m.payload.body.startsWith(tag)))
    .map((m) => m.event === 'phx_reply' ? `r${m.payload.response.k}` : `b${m.payload.body.slice(tag.length + 1)}`)
  const want = []
  for (let k = 0; k < 100; k++) want.push(`r${k}`, `b${k}`)
  assert.deepEqual(order, want)
})

test('a binary shout reaches V2 subscribers as a binary broadcast; V1 ones keep their JSON broadcasts', T, async (t) => {
  const sender = await RawClient.connect()
  t.after(() => sender.close())
  const v2 = await RawClient.connect()
  t.after(() => v2.close())
  const v1 = await RawClient.connect({ vsn: '1.0.0' })
  t.after(() => v1.close())
  const { joinRef } = await sender.joinOk('room:lobby')
  await v2.joinOk('room:lobby')
  await v1.joinOk('room:lobby')
  const data = Buffer.from([0, 1, 2, 250, 251, 255, 10, 13, 0])
  sender.ws.send(binaryPush(joinRef, '77', 'room:lobby', 'shout', data))
  const got = await v2.next((m) => m.binary && readBroadcast(m.raw) && readBroadcast(m.raw).event === 'shout', 3000, 'binary shout')
  const b = readBroadcast(got.raw)
  assert.equal(b.topic, 'room:lobby')
  assert.deepEqual(Buffer.from(b.data), data)
  await sender.expectNone((m) => m.binary, 300, 'binary shout echoed to its sender')
  // the V1 socket got nothing for it and still works
  const tag = uniq('after')
  sender.push('room:lobby', 'new_msg', { body: tag }, { joinRef })
  await v1.next((m) => m.event === 'new_msg' && m.payload.body === tag, 3000, 'a JSON broadcast after the binary one')
  assert.equal(v1.all.filter((m) => m.event === 'shout').length, 0)
})
