'use strict'
// Helpers of the integration tests: the server under test (PHX_URL, PHX_BIN),
// a raw Phoenix wire client over `ws`, a raw TCP WebSocket client that can
// send malformed frames, free ports and launching extra server instances.

const assert = require('node:assert/strict')
const net = require('node:net')
const crypto = require('node:crypto')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const WebSocket = require('ws')

const PHX_URL = (process.env.PHX_URL || 'http://127.0.0.1:4000').replace(/\/+$/, '')
const PHX_BIN = process.env.PHX_BIN || 'build/phx-chat'
const WS_BASE = PHX_URL.replace(/^http/, 'ws')
const { hostname: HOST, port: PORT_STR } = new URL(PHX_URL)
const PORT = Number(PORT_STR || 80)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let counter = 0
function uniq (prefix = 'u') {
  counter += 1
  return `${prefix}${process.pid.toString(36)}${Date.now().toString(36)}${counter}${Math.random().toString(36).slice(2, 6)}`
}

async function waitFor (cond, timeout = 3000, what = 'condition', interval = 20) {
  const deadline = Date.now() + timeout
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(interval)
  }
}

async function httpGet (path, opts = {}, base = PHX_URL) {
  const res = await fetch(base + path, { ...opts, signal: AbortSignal.timeout(opts.timeout || 10000) })
  const text = await res.text()
  let json = null
  try { json = JSON.parse(text) } catch (_) { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json }
}

function postJSON (path, body, base = PHX_URL) {
  return httpGet(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  }, base)
}

async function getToken (userId) {
  const res = await httpGet(`/token?user_id=${encodeURIComponent(userId)}`)
  assert.equal(res.status, 200, `GET /token answered ${res.status}: ${res.text}`)
  return res.json.token
}

// A free TCP port on 127.0.0.1 (closed again, so a server can take it).
function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

// ---------------------------------------------------------------------------
// Raw Phoenix V2/V1 client over `ws`: exact frames, refs and join_refs.

class RawClient {
  constructor (ws, vsn) {
    this.ws = ws
    this.vsn = vsn
    this.inbox = []
    this.all = []
    this.waiters = []
    this.closeInfo = null
    this.closeWaiters = []
    this.ref = 0
    ws.on('message', (data, isBinary) => this._onMessage(data, isBinary))
    ws.on('error', () => { /* reported through close */ })
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason ? reason.toString() : '' }
      for (const w of this.closeWaiters.splice(0)) w(this.closeInfo)
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer)
        w.reject(new Error(`socket closed (code ${code}) while waiting for ${w.what}`))
      }
    })
  }

  static connect ({ params = {}, vsn = '2.0.0', base = WS_BASE, timeout = 5000 } = {}) {
    const qs = new URLSearchParams(params)
    if (vsn != null) qs.set('vsn', vsn)
    const url = `${base}/socket/websocket?${qs}`
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeout })
      const c = new RawClient(ws, vsn || '1.0.0')
      ws.once('open', () => resolve(c))
      ws.once('unexpected-response', (req, res) => {
        const err = new Error(`upgrade refused with HTTP ${res.statusCode}`)
        err.statusCode = res.statusCode
        res.resume()
        req.destroy()
        reject(err)
      })
      ws.once('error', reject)
    })
  }

  _onMessage (data, isBinary) {
    let msg
    if (isBinary) {
      msg = { binary: true, raw: Buffer.from(data) }
    } else {
      const text = data.toString()
      let parsed
      try { parsed = JSON.parse(text) } catch (_) { parsed = undefined }
      if (Array.isArray(parsed)) {
        msg = { join_ref: parsed[0], ref: parsed[1], topic: parsed[2], event: parsed[3], payload: parsed[4], raw: parsed, text }
      } else if (parsed && typeof parsed === 'object') {
        msg = { ...parsed, raw: parsed, text }
      } else {
        msg = { raw: parsed, text, invalid: true }
      }
    }
    this.all.push(msg)
    const i = this.waiters.findIndex((w) => w.pred(msg))
    if (i >= 0) {
      const [w] = this.waiters.splice(i, 1)
      clearTimeout(w.timer)
      w.resolve(msg)
    } else {
      this.inbox.push(msg)
    }
  }

  get isOpen () { return this.ws.readyState === WebSocket.OPEN }

  nextRef () { this.ref += 1; return String(this.ref) }

  send ({ join_ref: joinRef = null, ref = null, topic, event, payload = {} }) {
    if (this.vsn.startsWith('2')) this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload]))
    else this.ws.send(JSON.stringify({ topic, event, payload, ref, join_ref: joinRef }))
  }

  push (topic, event, payload = {}, { joinRef = null, ref } = {}) {
    const r = ref === undefined ? this.nextRef() : ref
    this.send({ join_ref: joinRef, ref: r, topic, event, payload })
    return r
  }

  next (pred, timeout = 3000, what = 'a matching message') {
    const i = this.inbox.findIndex(pred)
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0])
    if (this.closeInfo) return Promise.reject(new Error(`socket closed (code ${this.closeInfo.code}) before ${what}`))
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, reject, what }
      w.timer = setTimeout(() => {
        const i = this.waiters.indexOf(w)
        if (i >= 0) this.waiters.splice(i, 1)
        const seen = this.all.slice(-8).map((m) => m.text || '<binary>').join('\n    ')
        reject(new Error(`timed out after ${timeout} ms waiting for ${what}; last messages:\n    ${seen}`))
      }, timeout)
      this.waiters.push(w)
    })
  }

  reply (ref, topic, timeout = 3000) {
    return this.next((m) => m.event === 'phx_reply' && m.ref === ref && m.topic === topic, timeout, `phx_reply ref=${ref} on ${topic}`)
  }

  async join (topic, payload = {}, timeout = 3000) {
    const jr = this.nextRef()
    this.send({ join_ref: jr, ref: jr, topic, event: 'phx_join', payload })
    const reply = await this.reply(jr, topic, timeout)
    return { joinRef: jr, reply, status: reply.payload.status, response: reply.payload.response }
  }

  async joinOk (topic, payload = {}) {
    const r = await this.join(topic, payload)
    assert.equal(r.status, 'ok', `join ${topic}: ${r.reply.text}`)
    return r
  }

  async request (topic, event, payload, joinRef, timeout = 3000) {
    const r = this.push(topic, event, payload, { joinRef })
    return this.reply(r, topic, timeout)
  }

  async expectNone (pred, ms = 300, what = 'unexpected message') {
    await sleep(ms)
    const got = this.inbox.filter(pred)
    assert.equal(got.length, 0, `expected no ${what}, got: ${got.map((m) => m.text).join(' | ')}`)
  }

  waitClose (timeout = 5000) {
    if (this.closeInfo) return Promise.resolve(this.closeInfo)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`socket not closed within ${timeout} ms`)), timeout)
      this.closeWaiters.push((info) => { clearTimeout(timer); resolve(info) })
    })
  }

  close () {
    if (this.ws.readyState !== WebSocket.CLOSED) {
      try { this.ws.terminate() } catch (_) { /* ignore */ }
    }
  }
}

// ---------------------------------------------------------------------------
// Raw TCP: an HTTP upgrade written by hand and WebSocket frames built by hand,
// so that malformed input (unmasked, oversized, garbage) can be sent.

// Encodes one frame.  opts: { mask = true, fin = true, length (claimed payload length) }.
function encodeFrame (opcode, payload = Buffer.alloc(0), opts = {}) {
  const mask = opts.mask !== false
  const data = Buffer.from(payload)
  const len = opts.length !== undefined ? opts.length : data.length
  let head
  if (len < 126) {
    head = Buffer.from([(opts.fin === false ? 0 : 0x80) | opcode, (mask ? 0x80 : 0) | len])
  } else if (len < 65536) {
    head = Buffer.alloc(4)
    head[0] = (opts.fin === false ? 0 : 0x80) | opcode
    head[1] = (mask ? 0x80 : 0) | 126
    head.writeUInt16BE(len, 2)
  } else {
    head = Buffer.alloc(10)
    head[0] = (opts.fin === false ? 0 : 0x80) | opcode
    head[1] = (mask ? 0x80 : 0) | 127
    head.writeBigUInt64BE(BigInt(len), 2)
  }
  if (!mask) return Buffer.concat([head, data])
  const key = crypto.randomBytes(4)
  const masked = Buffer.alloc(data.length)
  for (let i = 0; i < data.length; i++) masked[i] = data[i] ^ key[i & 3]
  return Buffer.concat([head, key, masked])
}

// Decodes the server's (unmasked) frames at the start of buf; returns
// { frames: [{opcode, payload}], rest }.
function decodeFrames (buf) {
  const frames = []
  let o = 0
  for (;;) {
    if (buf.length - o < 2) break
    const opcode = buf[o] & 0x0f
    const masked = (buf[o + 1] & 0x80) !== 0
    let len = buf[o + 1] & 0x7f
    let p = o + 2
    if (len === 126) {
      if (buf.length - o < 4) break
      len = buf.readUInt16BE(o + 2)
      p = o + 4
    } else if (len === 127) {
      if (buf.length - o < 10) break
      len = Number(buf.readBigUInt64BE(o + 2))
      p = o + 10
    }
    if (masked) p += 4
    if (buf.length < p + len) break
    frames.push({ opcode, payload: buf.subarray(p, p + len), masked })
    o = p + len
  }
  return { frames, rest: buf.subarray(o) }
}

// A TCP connection to the server that records everything it receives.
class TcpClient {
  constructor (sock) {
    this.sock = sock
    this.data = Buffer.alloc(0)
    this.ended = false
    this.endWaiters = []
    this.dataWaiters = []
    sock.on('data', (d) => {
      this.data = Buffer.concat([this.data, d])
      for (const w of this.dataWaiters.slice()) w()
    })
    const onEnd = () => {
      if (this.ended) return
      this.ended = true
      for (const w of this.endWaiters.splice(0)) w()
      for (const w of this.dataWaiters.slice()) w()
    }
    sock.on('end', onEnd)
    sock.on('close', onEnd)
    sock.on('error', () => { /* a reset also ends the connection */ })
  }

  static connect (port = PORT, host = HOST) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host }, () => resolve(new TcpClient(sock)))
      sock.once('error', reject)
    })
  }

  write (buf) { this.sock.write(buf) }

  // Resolves when cond(this.data) is truthy, rejects after timeout.
  until (cond, timeout = 5000, what = 'data') {
    return new Promise((resolve, reject) => {
      let settled = false
      const check = () => {
        if (settled) return
        const v = cond(this.data)
        if (v) { done(); resolve(v) } else if (this.ended) { done(); reject(new Error(`connection ended before ${what}; got ${JSON.stringify(this.data.toString('latin1').slice(0, 200))}`)) }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`timed out after ${timeout} ms waiting for ${what}; got ${JSON.stringify(this.data.toString('latin1').slice(0, 200))}`)) }, timeout)
      const done = () => {
        settled = true
        clearTimeout(timer)
        const i = this.dataWaiters.indexOf(check)
        if (i >= 0) this.dataWaiters.splice(i, 1)
      }
      this.dataWaiters.push(check)
      check()
    })
  }

  waitEnd (timeout = 5000) {
    if (this.ended) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connection not closed by the server within ${timeout} ms`)), timeout)
      this.endWaiters.push(() => { clearTimeout(timer); resolve() })
    })
  }

  // Performs a WebSocket upgrade of /socket/websocket; resolves with the
  // response head.  Frames received afterwards stay in this.data.
  async upgrade (query = 'vsn=2.0.0') {
    const key = crypto.randomBytes(16).toString('base64')
    this.write(`GET /socket/websocket?${query} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
      'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    const end = await this.until((d) => { const i = d.indexOf('\r\n\r\n'); return i >= 0 ? i + 4 : 0 }, 5000, 'the upgrade response')
    const head = this.data.subarray(0, end).toString('latin1')
    this.data = this.data.subarray(end)
    assert.match(head, /^HTTP\/1\.1 101 /, `upgrade answered: ${head}`)
    return head
  }

  // Waits for a close frame from the server; resolves with its status code.
  async closeCode (timeout = 5000) {
    const frame = await this.until((d) => decodeFrames(d).frames.find((f) => f.opcode === 8), timeout, 'a close frame')
    return frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005
  }

  destroy () { this.sock.destroy() }
}

// ---------------------------------------------------------------------------
// Extra server instances (launcher tests).

// Starts BIN with args; resolves { proc, exited (a promise of {code, signal}), out() }.
function startServer (args, { env = process.env } = {}) {
  const proc = spawn(PHX_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout.on('data', (d) => { out += d })
  proc.stderr.on('data', (d) => { out += d })
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  return { proc, exited, out: () => out }
}

async function waitHttp (base, timeout = 15000) {
  await waitFor(async () => {
    try {
      const r = await fetch(base + '/', { signal: AbortSignal.timeout(1000) })
      await r.text()
      return r.status === 200
    } catch (_) { return false }
  }, timeout, `${base} to answer HTTP`, 100)
}

function withTimeout (promise, ms, what) {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms) })
  ])
}

// The pids whose sockets listen on 127.0.0.1:port (from /proc), among `pids`.
function listeners (port, pids) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0')
  const inodes = new Set()
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try { text = fs.readFileSync(f, 'utf8') } catch (_) { continue }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length > 9 && cols[1].endsWith(':' + hex) && cols[3] === '0A') inodes.add(cols[9])
    }
  }
  return pids.filter((pid) => {
    try {
      return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try { return inodes.has((fs.readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/) || [])[1]) } catch (_) { return false }
      })
    } catch (_) { return false }
  })
}

module.exports = {
  PHX_URL,
  PHX_BIN,
  WS_BASE,
  HOST,
  PORT,
  WebSocket,
  RawClient,
  TcpClient,
  encodeFrame,
  decodeFrames,
  sleep,
  uniq,
  waitFor,
  httpGet,
  postJSON,
  getToken,
  freePort,
  startServer,
  waitHttp,
  withTimeout,
  listeners
}
