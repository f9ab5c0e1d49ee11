// crane-server's web UI in a real headless browser (Debian's chromium, driven by npm's
// playwright-core): log in with a token, the runs list, a running run whose steps turn green
// as their events arrive (no reload), approving a gate, an archived run. Prints `ok <what>`
// per check and exits non-zero at the first failure. Screenshots go to DIR.
//   node server_ui.mjs PLAYWRIGHT_CORE_DIR URL TOKEN NAMESPACE DIR
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';

const [pwDir, url, token, ns, dir] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { chromium } = require(pwDir);
mkdirSync(dir, { recursive: true });
const ok = (what) => console.log('ok ' + what);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1480, height: 980 } });
  page.setDefaultTimeout(30000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto(url + '/');
  await page.fill('#token', token);
  await page.fill('#login-ns', ns);
  await page.click('#login-btn');
  await page.waitForSelector('#runs-body tr[data-name="ui-live"]');
  await page.waitForSelector('#runs-body tr[data-name="ui-archived"]');
  const who = await page.textContent('#who');
  if (!who.includes(':alice')) throw new Error('who am I shows ' + who);
  ok('log in with a pasted token; the list shows live and archived runs as ' + who);
  const badges = await page.$$eval('#runs-body .badge', (els) => els.map((e) => e.className));
  if (!badges.some((c) => c.includes('phase-'))) throw new Error('no phase colours: ' + badges);
  ok('phases are coloured badges');
  await page.screenshot({ path: dir + '/ui-runs.png' });

  await page.click('#runs-body tr[data-name="ui-live"] a');
  await page.waitForSelector('svg#dag g.node[data-step="7"]');
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.waitForSelector('svg#dag g.node.phase-Succeeded[data-step="1"]', { timeout: 60000 });
  const last = await page.getAttribute('svg#dag g.node[data-step="7"]', 'class');
  if (last.includes('phase-Succeeded')) throw new Error('step 7 already green when step 1 turned green');
  ok('open a running run: step 1 turns green while step 7 is still ' + last.replace('node ', ''));
  await page.click('svg#dag g.node[data-step="1"]');
  await page.waitForSelector('#step-detail >> text=waitedMs');
  ok('a step shows its input, output, attempts and timings');
  await page.screenshot({ path: dir + '/ui-run-live.png' });

  await page.click('[data-approval="ui-live-step-5"] button[data-decide="approve"]');
  await page.waitForSelector('[data-approval="ui-live-step-5"] >> text=Approved by');
  ok('approve a gate from the run page');

  await page.waitForFunction(() => document.querySelectorAll('svg#dag g.node.phase-Succeeded').length === 7, null, { timeout: 90000 });
  if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error('the page was reloaded');
  ok('every step turns green live, without a reload');
  await page.waitForSelector('#run-phase .phase-Succeeded', { timeout: 30000 });
  await page.click('svg#dag g.node[data-step="4"]');
  await page.waitForSelector('#step-output >> text=300');
  await page.screenshot({ path: dir + '/ui-run.png' });
  ok('the run ends Succeeded with step outputs (step 4 = 300)');

  await page.goto(url + '/#/runs');
  await page.selectOption('#f-source', 'archived');
  await page.click('#apply');
  await page.waitForSelector('#runs-body tr[data-name="ui-archived"]');
  await page.click('#runs-body tr[data-name="ui-archived"] a');
  await page.waitForSelector('h1 .badge.src >> text=archived');
  await page.click('svg#dag g.node[data-step="2"]');
  await page.waitForSelector('#step-output >> text=Buy milk');
  await page.screenshot({ path: dir + '/ui-archived.png' });
  ok('open an archived run with its full step outputs');

  await page.goto(url + '/#/res/workerpools');
  await page.waitForSelector('#res >> text=default');
  ok('the WorkerPools page lists the pool');
  if (errors.length) throw new Error('page errors: ' + errors.join('; '));
} catch (e) {
  failed = true;
  console.log('FAIL ' + (e && e.message ? e.message : e));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
