// Drives Debian's Chromium (headless, through playwright-core) through a
// scripted sequence of steps, for doorwatch's end-to-end console tests.
//
//   node browser.mjs --script STEPS.json --out DIR
//
// STEPS.json is a JSON array run in order in one browser context:
//   {"goto": URL}                         navigate and wait for load
//   {"fill": SELECTOR, "value": TEXT}
//   {"click": SELECTOR}
//   {"select": SELECTOR, "value": OPTION}
//   {"waitFor": SELECTOR}                 until visible
//   {"expectText": SELECTOR, "contains": TEXT}
//                                         until an element matching SELECTOR
//                                         has TEXT in its text (case-sensitive)
//   {"expectUrl": SUBSTRING}              until the page URL contains it
//   {"screenshot": "NAME.png"}            full page, into DIR
//   {"login": {"user": "ada", "password": "optional"}}
//                                         on provider.mjs's login page: signs
//                                         in, passes consent, and waits until
//                                         the browser has left the provider
// SELECTOR is a Playwright selector (CSS, or `text=...`); one that matches
// several elements acts on the first. Each step may carry "timeout" (ms,
// default 15000).
//
// Prints one JSON line. Success:
//   {"ok":true,"steps":N,"url":FINAL_URL,"console_errors":[..],
//    "csp_violations":[..],"blocked_requests":[..]}
// Failure (exit 1; DIR/failure.png and DIR/failure.html are saved):
//   {"ok":false,"step":I,"error":"..","url":..,"console_errors":[..],..}
// where I is the 0-based index of the failing step.
//
// console_errors holds every console message of type error (Chromium reports
// CSP violations and failed loads there) and every uncaught page exception;
// csp_violations holds each `securitypolicyviolation` event as
// "DIRECTIVE blocked BLOCKED_URI on DOCUMENT_URI". Requests to anything but
// 127.0.0.1, localhost or [::1] are aborted and listed in blocked_requests.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const DEFAULT_TIMEOUT = 15_000;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

const { values: args } = parseArgs({
  options: { script: { type: 'string' }, out: { type: 'string' } },
  strict: true,
});
if (!args.script || !args.out) {
  process.stderr.write('usage: node browser.mjs --script STEPS.json --out DIR\n');
  process.exit(2);
}
const steps = JSON.parse(readFileSync(args.script, 'utf8'));
if (!Array.isArray(steps)) throw new Error(`${args.script} must hold a JSON array of steps`);
mkdirSync(args.out, { recursive: true });

const consoleErrors = [];
const cspViolations = [];
const blockedRequests = [];

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// Polls `check` (which returns a value to stop, or undefined) until timeout.
async function until(timeout, what, check) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what()}`);
    await sleep(100);
  }
}

async function login(page, { user, password }, timeout) {
  if (!user) throw new Error('login needs {"user": NAME}');
  await page.locator('form#login').waitFor({ timeout });
  const provider = new URL(page.url()).origin;
  await page.locator('form#login input[name=login]').fill(user, { timeout });
  await page.locator('form#login input[name=password]').fill(password ?? `password-of-${user}`, { timeout });
  await page.locator('#login-submit').click({ timeout });
  // Then: refused, the consent page, or already back at the client.
  let consented = false;
  await until(timeout, () => `the provider to finish signing in ${user} (at ${page.url()})`, async () => {
    if (new URL(page.url()).origin !== provider) return true;
    if (await page.locator('#login-error').count()) {
      throw new Error(`the provider refused ${user}: ${await page.locator('#login-error').textContent()}`);
    }
    if (await page.locator('pre#error').count()) {
      throw new Error(`the provider failed: ${await page.locator('pre#error').textContent()}`);
    }
    if (!consented && await page.locator('form#consent').count()) {
      consented = true;
      await page.locator('#consent-continue').click({ timeout });
    }
    return undefined;
  });
}

async function run(page, step) {
  const timeout = step.timeout ?? DEFAULT_TIMEOUT;
  const first = (selector) => page.locator(selector).first();
  if ('goto' in step) {
    await page.goto(step.goto, { timeout });
  } else if ('fill' in step) {
    await first(step.fill).fill(String(step.value ?? ''), { timeout });
  } else if ('click' in step) {
    await first(step.click).click({ timeout });
  } else if ('select' in step) {
    await first(step.select).selectOption(String(step.value), { timeout });
  } else if ('waitFor' in step) {
    await first(step.waitFor).waitFor({ state: 'visible', timeout });
  } else if ('expectText' in step) {
    let texts = [];
    await until(timeout, () => `${JSON.stringify(step.contains)} in ${step.expectText}; found ${JSON.stringify(texts)}`, async () => {
      texts = await page.locator(step.expectText).allTextContents();
      return texts.some((t) => t.includes(step.contains)) ? true : undefined;
    });
  } else if ('expectUrl' in step) {
    await until(timeout, () => `a URL containing ${JSON.stringify(step.expectUrl)}; at ${page.url()}`,
      async () => (page.url().includes(step.expectUrl) ? true : undefined));
  } else if ('screenshot' in step) {
    await page.screenshot({ path: join(args.out, step.screenshot), fullPage: true, timeout });
  } else if ('login' in step) {
    await login(page, step.login ?? {}, timeout);
  } else {
    throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Playwright gives the browser a fresh temporary profile and removes it
  // on close.
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  timeout: 30_000,
});

let result;
let page;
let index = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (LOOPBACK.has(new URL(url).hostname)) return route.continue();
    blockedRequests.push(url);
    return route.abort('blockedbyclient');
  });
  await context.exposeBinding('__doorwatchCspViolation', (source, text) => { cspViolations.push(text); });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__doorwatchCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} on ${e.documentURI}`);
    }, true);
  });
  page = await context.newPage();
  page.setDefaultTimeout(DEFAULT_TIMEOUT);
  page.on('console', (message) => {
    if (message.type() === 'error') {
      const where = message.location()?.url;
      consoleErrors.push(where ? `${message.text()} (${where})` : message.text());
    }
  });
  page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`));

  for (index = 0; index < steps.length; index += 1) {
    process.stderr.write(`step ${index}: ${JSON.stringify(steps[index])}\n`);
    await run(page, steps[index]);
  }
  result = { ok: true, steps: steps.length, url: page.url() };
} catch (error) {
  result = { ok: false, step: index, error: String(error?.message ?? error).split('\n')[0], url: page?.url() };
  process.stderr.write(`${error?.stack ?? error}\n`);
  if (page) {
    await page.screenshot({ path: join(args.out, 'failure.png'), fullPage: true, timeout: 5_000 }).catch(() => {});
    const html = await page.content().catch((e) => `<!-- could not read the page: ${e.message} -->`);
    writeFileSync(join(args.out, 'failure.html'), html);
  }
}
await browser.close().catch(() => {});

result.console_errors = consoleErrors;
result.csp_violations = cspViolations;
result.blocked_requests = blockedRequests;
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(result.ok ? 0 : 1);
