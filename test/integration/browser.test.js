'use strict'
// The chat page in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), with the official phoenix.js served by the node:
//   - two tabs join room:lobby; a message typed in one appears in both, and
//     each tab lists the other as online (presence:lobby through phoenix.js's
//     Presence);
//   - long polling: a ?transport=longpoll tab and a WebSocket tab chat and
//     list each other online; a tab whose WebSocket is blocked falls back to
//     long polling by itself (phoenix.js's longPollFallbackMs, as Phoenix
//     1.7's generated app.js) and still chats.  These skip, saying why, while
//     GET /socket/longpoll answers 404.
// PHX_CHAT_PAGE=FILE serves FILE as the page at / instead of the server's
// (to run these tests against another server, e.g. real Phoenix, with this
// page); Chromium then treats the page as public and would refuse its
// connections to 127.0.0.1 (Local Network Access), so that check is off.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { chromium } = require('playwright-core')
const { PHX_URL, httpGet, uniq, freePort } = require('./lib')

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const PAGE_FILE = process.env.PHX_CHAT_PAGE || ''
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ...(PAGE_FILE ? ['--disable-features=LocalNetworkAccessChecks'] : [])]

// A browser context (closed after the test) whose tabs get PAGE_FILE at /
// when it is set.
async function launch (t) {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/setup.sh test installs it)`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'phx-chromium-'))
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000
  })
  t.after(async () => {
    await context.close().catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  })
  if (PAGE_FILE) {
    const body = fs.readFileSync(PAGE_FILE, 'utf8')
    await context.route((url) => url.origin === PHX_URL && url.pathname === '/', (route) =>
      route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body }))
  }
  return context
}

test('GET /js/phoenix.js serves the phoenix 1.7 client', { timeout: 10000 }, async () => {
  const res = await httpGet('/js/phoenix.js')
  assert.equal(res.status, 200, 'is examples/chat/node_modules installed (npm ci)?')
  assert.match(res.headers.get('content-type') || '', /javascript/)
  assert.match(res.text, /var Phoenix = /)
})

test('two chat pages: a message typed in one appears in both; each sees the other online', { timeout: 60000 }, async (t) => {
  const context = await launch(t)
  const pages = []
  const names = [uniq('alice'), uniq('bob')]
  for (let i = 0; i < 2; i++) {
    const page = await context.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(`${PHX_URL}/?name=${encodeURIComponent(names[i])}`, { waitUntil: 'load' })
    await page.waitForSelector('#status[data-state="joined"]', { timeout: 10000 })
      .catch(async (e) => { throw new Error(`page ${i} did not join: ${await page.textContent('#status')} ${errors.join(' ')}: ${e.message}`) })
    assert.equal(await page.getAttribute('#status', 'data-transport'), 'websocket', `page ${i} uses WebSocket by default`)
    pages.push({ page, errors })
  }
  // Presence: both tabs list both names (other tabs of earlier runs may be
  // listed too, so only these two are checked).
  const onlineKeys = (page) => page.evaluate(() => [...document.querySelectorAll('#online li')].map((li) => li.dataset.key))
  for (const [i, { page }] of pages.entries()) {
    await page.waitForFunction((ns) => ns.every((n) => document.querySelector(`#online li[data-key="${n}"]`)), names, { timeout: 5000 })
      .catch(async (e) => { throw new Error(`page ${i} does not list both users online: ${JSON.stringify(await onlineKeys(page))}: ${e.message}`) })
    const keys = await onlineKeys(page)
    for (const n of names) assert.equal(keys.filter((k) => k === n).length, 1, `${n} is listed once on page ${i}`)
  }
  const text = uniq('hello from the browser ')
  await pages[0].page.fill('#chat-input', text)
  await pages[0].page.press('#chat-input', 'Enter')
  for (const [i, { page }] of pages.entries()) {
    await page.waitForFunction((m) => document.querySelector('#messages').textContent.includes(m), text, { timeout: 5000 })
      .catch((e) => { throw new Error(`page ${i} never showed the message: ${e.message}`) })
  }
  assert.equal(await pages[0].page.inputValue('#chat-input'), '', 'the input is cleared after sending')
  for (const { page } of pages) {
    const count = await page.evaluate((m) => [...document.querySelectorAll('#messages p')].filter((p) => p.textContent.includes(m)).length, text)
    assert.equal(count, 1, 'the message shows exactly once')
  }
  if (process.env.PHX_SCREENSHOT) await pages[1].page.screenshot({ path: process.env.PHX_SCREENSHOT })
  for (const { errors } of pages) assert.deepEqual(errors, [])
  // The second tab closes: the first one sees it leave (presence_diff).
  await pages[1].page.close()
  await pages[0].page.waitForFunction((n) => !document.querySelector(`#online li[data-key="${n}"]`), names[1], { timeout: 5000 })
    .catch(async (e) => { throw new Error(`page 0 still lists ${names[1]}: ${JSON.stringify(await onlineKeys(pages[0].page))}: ${e.message}`) })
  assert.ok((await onlineKeys(pages[0].page)).includes(names[0]), 'page 0 still lists itself')
  assert.deepEqual(pages[0].errors, [])
})

// ---------------------------------------------------------------------------
// Long polling

let lpAvailable = null
function longPollAvailable () {
  if (!lpAvailable) lpAvailable = httpGet('/socket/longpoll?vsn=2.0.0').then((r) => r.status !== 404, () => false)
  return lpAvailable
}

// test() that skips with a clear message when the server has no long polling.
function lpTest (name, opts, fn) {
  test(name, opts, async (t) => {
    if (!(await longPollAvailable())) {
      t.skip(`GET ${PHX_URL}/socket/longpoll answers 404: this server has no long polling yet`)
      return
    }
    return fn(t)
  })
}

// Opens a chat tab at /?QUERY (before: called with the page before it loads)
// and waits until it has joined room:lobby; resolves { page, errors, name }.
async function chatTab (context, query, { before, timeout = 15000 } = {}) {
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (e) => errors.push(String(e)))
  if (before) await before(page)
  await page.goto(`${PHX_URL}/?${new URLSearchParams(query)}`, { waitUntil: 'load' })
  await page.waitForSelector('#status[data-state="joined"]', { timeout })
    .catch(async (e) => { throw new Error(`tab ${query.name} did not join: ${await page.textContent('#status')} ${errors.join(' ')}: ${e.message}`) })
  return { page, errors, name: query.name }
}

const transportOf = (tab) => tab.page.getAttribute('#status', 'data-transport')

// Each tab lists every name online.
async function allOnline (tabs) {
  const names = tabs.map((tab) => tab.name)
  for (const tab of tabs) {
    await tab.page.waitForFunction((ns) => ns.every((n) => document.querySelector(`#online li[data-key="${n}"]`)), names, { timeout: 10000 })
      .catch(async (e) => {
        const keys = await tab.page.evaluate(() => [...document.querySelectorAll('#online li')].map((li) => li.dataset.key))
        throw new Error(`${tab.name} does not list ${names.join(', ')} online: ${JSON.stringify(keys)}: ${e.message}`)
      })
  }
}

// A message typed in `from` appears once in every tab.
async function chat (from, tabs) {
  const text = uniq(`from ${from.name} `)
  await from.page.fill('#chat-input', text)
  await from.page.press('#chat-input', 'Enter')
  for (const tab of tabs) {
    await tab.page.waitForFunction((m) => document.querySelector('#messages').textContent.includes(m), text, { timeout: 10000 })
      .catch((e) => { throw new Error(`${tab.name} never showed the message of ${from.name}: ${e.message}`) })
    const count = await tab.page.evaluate((m) => [...document.querySelectorAll('#messages p')].filter((p) => p.textContent.includes(m)).length, text)
    assert.equal(count, 1, `the message of ${from.name} shows once in ${tab.name}`)
  }
}

lpTest('a long-poll page and a WebSocket page chat with each other and list each other online', { timeout: 90000 }, async (t) => {
  const context = await launch(t)
  const lp = await chatTab(context, { transport: 'longpoll', name: uniq('lp') })
  const ws = await chatTab(context, { name: uniq('ws') })
  assert.equal(await transportOf(lp), 'longpoll')
  assert.equal(await transportOf(ws), 'websocket')
  await allOnline([lp, ws])
  await chat(lp, [lp, ws])
  await chat(ws, [lp, ws])
  for (const tab of [lp, ws]) assert.deepEqual(tab.errors, [], `no page errors in ${tab.name}`)
})

// The WebSocket of a tab fails in Chromium's network stack: an init script
// points the page's WebSocket for /socket/websocket at a port of 127.0.0.1
// where nothing listens, so the connection is refused and the page's
// WebSocket gets error and close 1006 without ever opening, as behind a proxy
// that refuses upgrades.  (DevTools' Network.setBlockedURLs does not stop
// WebSockets in Chromium 156, and a playwright route cannot refuse an
// upgrade.)  phoenix.js falls back at once (an error before the primary
// transport opened) and remembers it in sessionStorage for the tab.
lpTest('WebSocket refused: the page falls back to long polling by itself, chats with a WebSocket page, and remembers it', { timeout: 90000 }, async (t) => {
  const context = await launch(t)
  const closedPort = await freePort()
  const blocked = await chatTab(context, { name: uniq('refused') }, {
    before: (page) => page.addInitScript((port) => {
      const Native = window.WebSocket
      window.WebSocket = class extends Native {
        constructor (url, protocols) {
          const u = new URL(url, window.location.href)
          if (u.pathname.endsWith('/socket/websocket') && !window.sessionStorage.getItem('unblocked')) u.port = String(port)
          super(u.href, protocols)
        }
      }
    }, closedPort)
  })
  const ws = await chatTab(context, { name: uniq('ws') })
  assert.equal(await transportOf(blocked), 'longpoll', 'the tab whose WebSocket is refused fell back to long polling')
  assert.equal(await transportOf(ws), 'websocket')
  assert.equal(await blocked.page.evaluate(() => sessionStorage.getItem('phx:fallback:LongPoll')), 'true',
    'phoenix.js remembers the fallback for the tab')
  await allOnline([blocked, ws])
  await chat(blocked, [blocked, ws])
  await chat(ws, [blocked, ws])
  // Unblocked and reloaded, the tab still uses long polling: the memorized
  // fallback, not the failure, decides now.
  await blocked.page.evaluate(() => sessionStorage.setItem('unblocked', '1'))
  await blocked.page.reload({ waitUntil: 'load' })
  await blocked.page.waitForSelector('#status[data-state="joined"]', { timeout: 15000 })
  assert.equal(await transportOf(blocked), 'longpoll', 'the reloaded tab goes straight to long polling')
  await allOnline([blocked, ws])
  await chat(ws, [blocked, ws])
  for (const tab of [blocked, ws]) assert.deepEqual(tab.errors, [], `no page errors in ${tab.name}`)
})

// The task's way: playwright's routeWebSocket with a handler that closes the
// route at once without connecting to the server.  Playwright then mocks the
// WebSocket in the page: it opens, never answers phoenix.js's health-check
// ping and is closed; phoenix.js reconnects (its backoff) and falls back when
// longPollFallbackMs (2500 ms) pass without a primary transport that
// answered (about 8 s here, bounded by the backoff).
lpTest('WebSocket closed by a route that never connects to the server: the page falls back to long polling and chats', { timeout: 90000 }, async (t) => {
  const context = await launch(t)
  const closed = await chatTab(context, { name: uniq('closed') }, {
    before: (page) => page.routeWebSocket(/\/socket\/websocket/, (route) => { route.close({ code: 1011, reason: 'blocked by the test' }).catch(() => {}) }),
    timeout: 30000
  })
  const ws = await chatTab(context, { name: uniq('ws') })
  assert.equal(await transportOf(closed), 'longpoll')
  await allOnline([closed, ws])
  await chat(ws, [closed, ws])
  await chat(closed, [closed, ws])
  for (const tab of [closed, ws]) assert.deepEqual(tab.errors, [], `no page errors in ${tab.name}`)
})
