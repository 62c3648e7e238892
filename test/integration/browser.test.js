'use strict'
// The chat page in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core): two tabs join room:lobby with the official phoenix.js
// served by the node; a message typed in one appears in both, and each tab
// lists the other as online (presence:lobby through phoenix.js's Presence).

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { chromium } = require('playwright-core')
const { PHX_URL, httpGet, uniq } = require('./lib')

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

test('GET /js/phoenix.js serves the phoenix 1.7 client', { timeout: 10000 }, async () => {
  const res = await httpGet('/js/phoenix.js')
  assert.equal(res.status, 200, 'is examples/chat/node_modules installed (npm ci)?')
  assert.match(res.headers.get('content-type') || '', /javascript/)
  assert.match(res.text, /var Phoenix = /)
})

test('two chat pages: a message typed in one appears in both; each sees the other online', { timeout: 60000 }, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (scripts/setup.sh test installs it)`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'phx-chromium-'))
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000
  })
  t.after(async () => {
    await context.close().catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  })
  const pages = []
  const names = [uniq('alice'), uniq('bob')]
  for (let i = 0; i < 2; i++) {
    const page = await context.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    await page.goto(`${PHX_URL}/?name=${encodeURIComponent(names[i])}`, { waitUntil: 'load' })
    await page.waitForSelector('#status[data-state="joined"]', { timeout: 10000 })
      .catch(async (e) => { throw new Error(`page ${i} did not join: ${await page.textContent('#status')} ${errors.join(' ')}: ${e.message}`) })
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
