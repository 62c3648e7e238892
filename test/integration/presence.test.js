'use strict'
// PresenceChannel keys (RefWeb.PresenceChannel: socket.assigns[:user_id] ||
// params["name"], tracked as to_string(key)): an authenticated socket is
// keyed by its user_id whatever the params say, with or without a name; an
// anonymous join without a name is tracked under "" (to_string(nil)).

const test = require('node:test')
const assert = require('node:assert/strict')
const { RawClient, getToken, uniq } = require('./lib')

const T = { timeout: 20000 }

// Joins topic and returns the keys of the presence_state pushed to the joiner.
async function joinAndState (c, topic, params) {
  const { joinRef } = await c.joinOk(topic, params)
  const st = await c.next((m) => m.event === 'presence_state' && m.topic === topic, 3000, 'presence_state')
  assert.equal(st.join_ref, joinRef)
  return st.payload
}

test('an authenticated join without a name is keyed by the user_id', T, async (t) => {
  const user = uniq('pu')
  const c = await RawClient.connect({ params: { token: await getToken(user) } })
  t.after(() => c.close())
  const topic = `presence:${uniq('r')}`
  const state = await joinAndState(c, topic, {})
  assert.deepEqual(Object.keys(state), [user])
  assert.equal(state[user].metas.length, 1)
  assert.equal(typeof state[user].metas[0].online_at, 'number')
  assert.equal(typeof state[user].metas[0].phx_ref, 'string')
})

test('an authenticated join with a name is keyed by the user_id too', T, async (t) => {
  const user = uniq('pn')
  const c = await RawClient.connect({ params: { token: await getToken(user) } })
  t.after(() => c.close())
  const topic = `presence:${uniq('r')}`
  const state = await joinAndState(c, topic, { name: 'someone else' })
  assert.deepEqual(Object.keys(state), [user])
})

test('an anonymous join without a name is tracked under ""; a named one under its name', T, async (t) => {
  const topic = `presence:${uniq('r')}`
  const a = await RawClient.connect()
  t.after(() => a.close())
  assert.deepEqual(Object.keys(await joinAndState(a, topic, {})), [''])
  const b = await RawClient.connect()
  t.after(() => b.close())
  const name = uniq('n')
  const state = await joinAndState(b, topic, { name })
  assert.deepEqual(Object.keys(state).sort(), ['', name].sort())
  const diff = await a.next((m) => m.event === 'presence_diff' && m.payload.joins[name], 3000, 'the join diff')
  assert.deepEqual(Object.keys(diff.payload.leaves), [])
})

test('anonymous join params that are not an object: join crashed', T, async (t) => {
  const c = await RawClient.connect()
  t.after(() => c.close())
  const r = await c.join(`presence:${uniq('r')}`, [1, 2])
  assert.equal(r.status, 'error')
  assert.deepEqual(r.response, { reason: 'join crashed' })
})
