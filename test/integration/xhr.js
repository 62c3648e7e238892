'use strict'
// Just enough of XMLHttpRequest, over Node's fetch, for phoenix.js's Ajax and
// LongPoll classes: open, setRequestHeader, send, abort, timeout, readyState,
// status, responseText and the onreadystatechange / onerror / ontimeout
// callbacks.  phoenix.js looks XMLHttpRequest up on `self`, so use() also
// sets globalThis.self; call it before require('phoenix').

const DONE = 4

class NodeXHR {
  constructor () {
    this.readyState = 0
    this.status = 0
    this.responseText = ''
    this.timeout = 0
    this.onreadystatechange = null
    this.onerror = null
    this.ontimeout = null
    this.headers = {}
    this.controller = new AbortController()
    this.aborted = false
  }

  open (method, url) {
    this.method = method
    this.url = url
    this.readyState = 1
  }

  setRequestHeader (name, value) { this.headers[name] = value }

  send (body) {
    let timedOut = false
    const timer = this.timeout > 0
      ? setTimeout(() => { timedOut = true; this.controller.abort() }, this.timeout)
      : null
    const finish = (fn) => {
      if (timer) clearTimeout(timer)
      if (this.aborted) return
      this.readyState = DONE
      fn()
    }
    fetch(this.url, { method: this.method, headers: this.headers, body: body == null ? undefined : body, signal: this.controller.signal })
      .then((res) => res.text().then((text) => finish(() => {
        this.status = res.status
        this.responseText = text
        if (this.onreadystatechange) this.onreadystatechange()
      })))
      .catch(() => finish(() => {
        if (timedOut) {
          if (this.ontimeout) this.ontimeout()
        } else if (this.onerror) {
          this.onerror()
        }
      }))
  }

  abort () {
    this.aborted = true
    this.controller.abort()
  }
}

function use () {
  if (typeof globalThis.self === 'undefined') globalThis.self = globalThis
  if (!globalThis.XMLHttpRequest) globalThis.XMLHttpRequest = NodeXHR
}

module.exports = { NodeXHR, use }
