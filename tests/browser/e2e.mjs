// Browser flows in Debian's headless Chromium, driven by playwright-core:
//   E1  the PC logs in with an HPKI card (TLS client certificate) on the
//       registration site, shows a QR code; the phone (a second browser context
//       with the DevTools virtual authenticator: ctap2, internal, UV) registers.
//   L1  the demo signing system sends the PC to inkan; the user enters the ID,
//       the phone signs in, the PC continues by itself; a file is signed.
// Every screen is checked by its text and kept as a screenshot.
//
// Run by tests/it/browser.rs with: INKAN_BASE, INKAN_CARD, INKAN_HOLDER_CERT,
// INKAN_HOLDER_KEY, INKAN_USER, INKAN_ARTIFACTS. Prints one JSON line at the end.

import { chromium } from 'playwright-core';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing ${name}`);
  return v;
};
const base = env('INKAN_BASE');
const card = env('INKAN_CARD');
const user = env('INKAN_USER');
const out = env('INKAN_ARTIFACTS');
mkdirSync(out, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const result = { screens: [] };
let step = 'start';
const open = []; // every page, for screenshots when a step fails

async function shot(page, name) {
  const path = join(out, `${String(result.screens.length + 1).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.screens.push(path);
}

async function expectText(page, text, name) {
  step = name;
  await page.getByText(text, { exact: false }).first().waitFor({ timeout: 15000 });
  await shot(page, name);
}

try {
  // The PC holds the HPKI card; inkan's certificate is from the fixture PKI.
  const pc = await browser.newContext({
    ignoreHTTPSErrors: true,
    locale: 'ja-JP',
    clientCertificates: [{ origin: card, certPath: env('INKAN_HOLDER_CERT'), keyPath: env('INKAN_HOLDER_KEY') }],
  });
  const phoneContext = await browser.newContext({
    ignoreHTTPSErrors: true,
    locale: 'ja-JP',
    viewport: { width: 390, height: 844 },
    isMobile: true,
    hasTouch: true,
    userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36',
  });
  const pcPage = await pc.newPage();
  const phone = await phoneContext.newPage();
  open.push(pcPage, phone);
  const cdp = await phoneContext.newCDPSession(phone);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
      isUserVerified: true, automaticPresenceSimulation: true,
    },
  });

  // ---- E1: phone registration with the HPKI card
  await pcPage.goto(`${base}/register`);
  for (const action of ['HPKIカードを使ってスマートフォンを登録する', 'マイナンバーカードを使ってスマートフォンを登録する',
    'スマートフォンを変更する', 'HPKIカードを使ってマイナンバーカードを登録する']) {
    await expectText(pcPage, action, 'pc-register-index');
  }
  await pcPage.getByText('HPKIカードを使ってスマートフォンを登録する').click();
  await expectText(pcPage, 'QRコードの有効期限', 'pc-e1-qr');
  if ((await pcPage.locator('#qr svg').count()) !== 1) throw new Error('no QR code on the PC page');
  if ((await pcPage.textContent('#user-id')) !== user) throw new Error('the PC page does not show the user ID');
  const before = await pcPage.textContent('#countdown');
  await pcPage.waitForTimeout(1500);
  if ((await pcPage.textContent('#countdown')) === before) throw new Error('the expiry is not counted down');
  const phoneUrl = await pcPage.getAttribute('#phone-url', 'href');
  const e1Code = (await pcPage.textContent('#confirmation')).trim();
  if (!/^[0-9]{4}$/.test(e1Code)) throw new Error(`no confirmation number on the PC page: ${e1Code}`);

  await phone.goto(phoneUrl);
  await expectText(phone, 'を押し、画面の案内に従って生体認証', 'phone-e1-register');
  if ((await phone.inputValue('#user_id')) !== user) throw new Error('the phone page does not show the user ID');
  // The phone shows which PC started this, and asks for the PC's number first.
  if (!(await phone.textContent('#pc-agent')).includes('Chrome')) throw new Error('the phone page does not name the PC browser');
  await phone.click('#start');
  await expectText(phone, '4桁の確認番号を入力してください', 'phone-e1-code-asked');
  await phone.fill('#code', e1Code);
  await phone.click('#start');
  await expectText(phone, 'ラベル', 'phone-e1-label');
  const label = await phone.inputValue('#label');
  if (!label.startsWith('Android')) throw new Error(`automatic label: ${label}`);
  await phone.click('#ok');
  await expectText(phone, '手続きが完了しました', 'phone-e1-done');
  await expectText(pcPage, 'スマートフォンの登録が完了しました', 'pc-e1-done');
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  result.e1 = { label, credentials: credentials.length, signCount: credentials[0]?.signCount };

  // ---- L1: log in to the demo signing system with the phone, then sign
  const pc2 = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'ja-JP' });
  const pcLogin = await pc2.newPage();
  open.push(pcLogin);
  await pcLogin.goto(`${base}/demo`);
  await expectText(pcLogin, 'スマートフォンでログイン', 'pc-l1-demo');
  await pcLogin.getByText('スマートフォンでログイン').click();
  await expectText(pcLogin, '本人IDを入力して', 'pc-l1-id');
  await pcLogin.fill('#user_id', user);
  await pcLogin.click('#next');
  await expectText(pcLogin, '「セキュリティキーによるサインイン」を押してください', 'pc-l1-qr');
  const loginUrl = await pcLogin.getAttribute('#phone-url', 'href');
  const l1Code = (await pcLogin.textContent('#confirmation')).trim();
  await phone.goto(loginUrl);
  await expectText(phone, 'セキュリティキーによるサインイン', 'phone-l1-login');
  if ((await phone.inputValue('#user_id')) !== user) throw new Error('the phone page does not show the user ID');
  await expectText(phone, 'inkan demo', 'phone-l1-system');
  await phone.fill('#code', l1Code);
  await phone.click('#start');
  await expectText(phone, 'ログインしました', 'phone-l1-done');
  // The PC moves on by itself to the signing system.
  await pcLogin.waitForURL(`${base}/demo`, { timeout: 15000 });
  await expectText(pcLogin, 'がログイン中です (fido', 'pc-l1-logged-in');
  const document = Buffer.from('処方箋: アムロジピン錠5mg 1日1回 28日分\n', 'utf8');
  await pcLogin.setInputFiles('input[type=file]', { name: 'rx.txt', mimeType: 'text/plain', buffer: document });
  await pcLogin.getByRole('button', { name: '署名する', exact: true }).click();
  await expectText(pcLogin, '署名しました', 'pc-l1-signed');
  const href = await pcLogin.getAttribute('a[download]', 'href');
  const p7s = Buffer.from(href.split(',')[1], 'base64');
  writeFileSync(join(out, 'rx.txt'), document);
  writeFileSync(join(out, 'rx.txt.p7s'), p7s);
  result.signature = join(out, 'rx.txt.p7s');
  result.document = join(out, 'rx.txt');
  // The doctor signs the sample e-prescription (XAdES) on the same page.
  await pcLogin.goto(`${base}/demo`);
  await pcLogin.getByRole('button', { name: '見本の処方箋に署名する (医師)' }).click();
  await expectText(pcLogin, 'XAdES-BES', 'pc-l1-prescription-signed');
  const xml = await pcLogin.getAttribute('a[download]', 'href');
  writeFileSync(join(out, 'prescription.xml'), Buffer.from(xml.split(',')[1], 'base64'));
  result.prescription = join(out, 'prescription.xml');
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.failed_at = step;
  result.error = String(e && e.stack || e);
  result.failed_pages = [];
  for (const page of open) {
    try {
      await shot(page, `failed-${step}`);
      result.failed_pages.push({ url: page.url(), text: (await page.textContent('body')).slice(0, 500) });
    } catch (_) { /* page gone */ }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
