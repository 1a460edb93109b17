// inkan pages: the phone's WebAuthn ceremony and the PC page that follows the phone.
// No external code; served as /assets/inkan.js (CSP: script-src 'self').
(function () {
  'use strict';
  var data = document.body.dataset;

  function enc(buf) {
    var bytes = new Uint8Array(buf), s = '';
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  function dec(text) {
    var b64 = text.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out.buffer;
  }
  function $(id) { return document.getElementById(id); }
  function showError(text) { var e = $('error'); if (e) { e.textContent = text; e.hidden = false; } }

  function post(url, body) {
    return fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) throw new Error(j.error_description || ('エラーが発生しました (HTTP ' + r.status + ')'));
        return j;
      });
    });
  }

  // The manuals' error guide: say what the user can do.
  function explain(err) {
    var name = err && err.name;
    if (name === 'NotAllowedError') {
      return '認証が完了しませんでした(キャンセルまたは時間切れ)。スマートフォンに生体認証(指紋・顔認証)と画面ロックが設定されていることを確認して、もう一度お試しください。';
    }
    if (name === 'NotSupportedError' || name === 'SecurityError') {
      return 'このブラウザではスマートフォン認証を利用できません。スマートフォン標準のブラウザ(iPhoneはSafari、AndroidはChrome)で開いてください。';
    }
    if (name === 'InvalidStateError') return 'このスマートフォンは既に登録されています。';
    return (err && err.message) || String(err);
  }

  // One WebAuthn ceremony against `base` (/m/<token> on the phone, /pc on the
  // PC's own browser): begin, create or get, finish; resolves to the next page.
  function ceremony(base, body, action) {
    return post(base + '/begin', body).then(function (options) {
      var pk = options.publicKey;
      pk.challenge = dec(pk.challenge);
      if (action === 'register') {
        pk.user.id = dec(pk.user.id);
        (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
        return navigator.credentials.create({ publicKey: pk }).then(function (c) {
          return {
            id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {},
            response: { attestationObject: enc(c.response.attestationObject), clientDataJSON: enc(c.response.clientDataJSON) }
          };
        });
      }
      (pk.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
      return navigator.credentials.get({ publicKey: pk }).then(function (c) {
        return {
          id: c.id, rawId: enc(c.rawId), type: c.type, extensions: {},
          response: {
            authenticatorData: enc(c.response.authenticatorData), clientDataJSON: enc(c.response.clientDataJSON),
            signature: enc(c.response.signature), userHandle: c.response.userHandle ? enc(c.response.userHandle) : null
          }
        };
      });
    }).then(function (credential) {
      return post(base + '/finish', credential);
    });
  }

  function phone() {
    var button = $('start');
    button.addEventListener('click', function () {
      if (!window.PublicKeyCredential || !navigator.credentials) { showError(explain({ name: 'NotSupportedError' })); return; }
      var code = $('code');
      if (code && !/^[0-9]{4}$/.test(code.value.trim())) { showError('PCの画面に表示されている4桁の確認番号を入力してください。'); return; }
      button.disabled = true;
      var base = location.pathname;
      ceremony(base, code ? { code: code.value.trim() } : {}, data.action).then(function (result) {
        location.href = result.next;
      }).catch(function (err) {
        button.disabled = false;
        // The browser gave up without an answer: the phone may hold no passkey
        // for this user (never registered, replaced, removed), or the user
        // cancelled. The server notes it for the PC and says which it can tell.
        if (err && err.name === 'NotAllowedError' && data.action !== 'register') {
          post(base + '/failed').then(function (r) { showError(r.message || explain(err)); })
            .catch(function () { showError(explain(err)); });
          return;
        }
        showError(explain(err));
      });
    });
  }

  function pc() {
    var step = data.step, phase = data.phase;
    var deadline = Date.now() + Number(data.expiresIn || 0) * 1000;
    var countdown = $('countdown');
    function tick() {
      if (!countdown) return;
      var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      countdown.textContent = Math.floor(left / 60) + '分' + ('0' + (left % 60)).slice(-2) + '秒';
    }
    function poll() {
      fetch('/pc/status', { credentials: 'same-origin', cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (s) {
        if (s.redirect) { location.href = s.redirect; return; }
        if (s.step !== step || String(s.phase) !== phase || s.expired) { location.reload(); return; }
        if (s.error) showError(s.error);
        setTimeout(poll, 1000);
      }).catch(function () { setTimeout(poll, 3000); });
    }
    if (step === 'waiting' || step === 'ceremony' || step === 'done') {
      tick(); setInterval(tick, 1000); setTimeout(poll, 1000);
    }
    // The browser's own way to the phone (hybrid transport: it shows its own
    // QR code and checks over Bluetooth that the phone is near), where it has one.
    var direct = $('direct');
    if (direct && window.PublicKeyCredential && navigator.credentials) {
      direct.hidden = false;
      direct.querySelector('button').addEventListener('click', function (ev) {
        ev.target.disabled = true;
        ceremony('/pc', {}, data.action).then(function (result) { location.href = result.next; })
          .catch(function (err) { ev.target.disabled = false; showError(explain(err)); });
      });
    }
  }

  if (data.page === 'phone') phone();
  if (data.page === 'pc') pc();
})();
