/* Intake mode A: the crew member's own key on their phone (vessel-relay).
 *
 * Enrolment at first use: an Ed25519 key pair (crypto_sign_keypair) kept in this
 * browser's localStorage; the union's X25519 key is pinned by its fingerprint once the
 * crew member says it matches the union's card. A report is an A1 message (UTF-8 JSON,
 * keys in the order of protocol.sealing.a1_message, with the case number the agent drew
 * for this page in "case", so the union files it under that number), signed over
 * "vessel-relay grievance A1\0" + message, padded to the buckets of
 * protocol/sealing.py (0x80 then zeros), sealed with crypto_box_seal to the pinned key,
 * and only that ciphertext is sent to the vessel's agent. No framework, no other JS. */
(function () {
  "use strict";
  var BUCKETS = [256, 1024, 4096, 16384, 65536 - 64];
  var MAX_TEXT_BYTES = 16384;
  var root = document.getElementById("phone-keys");
  if (!root) { return; }
  var vessel = root.dataset.vessel;
  var crew = root.dataset.crew;
  var keyName = "vr.a1.key." + vessel + "." + crew;
  var pinPrefix = "vr.a1.union." + vessel + ".";
  var button = document.getElementById("seal-send");
  var message = document.getElementById("message");

  function word(name) {
    var item = document.querySelector('#words [data-word="' + name + '"]');
    return item ? item.textContent : name;
  }
  function say(name) { message.textContent = word(name); message.hidden = false; }

  /* SHA-256 (FIPS 180-4), for fingerprints only: libsodium's standard build has no
   * SHA-256, and WebCrypto's digest needs a secure context (https), which a vessel's
   * Wi-Fi page is not. Checked against Python's hashlib by tests/web/test_phone_keys.py. */
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  function sha256(bytes) {
    var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    var length = bytes.length;
    var total = Math.ceil((length + 9) / 64) * 64;
    var data = new Uint8Array(total);
    data.set(bytes);
    data[length] = 0x80;
    var bits = length * 8;
    for (var b = 0; b < 4; b++) { data[total - 1 - b] = (bits >>> (8 * b)) & 0xff; }
    data[total - 5] = Math.floor(length / 0x20000000) & 0xff;
    var w = new Array(64);
    function rotr(x, n) { return (x >>> n) | (x << (32 - n)); }
    for (var off = 0; off < total; off += 64) {
      for (var i = 0; i < 16; i++) {
        w[i] = (data[off + 4 * i] << 24) | (data[off + 4 * i + 1] << 16) |
          (data[off + 4 * i + 2] << 8) | data[off + 4 * i + 3];
      }
      for (i = 16; i < 64; i++) {
        var s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        var s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      var a = h[0], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7], bb = h[1];
      for (i = 0; i < 64; i++) {
        var t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        var t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
        hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
      }
      h[0] = (h[0] + a) | 0; h[1] = (h[1] + bb) | 0; h[2] = (h[2] + c) | 0; h[3] = (h[3] + d) | 0;
      h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0; h[6] = (h[6] + g) | 0; h[7] = (h[7] + hh) | 0;
    }
    var out = new Uint8Array(32);
    for (i = 0; i < 8; i++) {
      out[4 * i] = h[i] >>> 24; out[4 * i + 1] = (h[i] >>> 16) & 0xff;
      out[4 * i + 2] = (h[i] >>> 8) & 0xff; out[4 * i + 3] = h[i] & 0xff;
    }
    return out;
  }
  window.vrSha256 = sha256;

  function start(sodium) {
    var B64 = sodium.base64_variants.ORIGINAL;
    var utf8 = new TextEncoder();
    function b64(bytes) { return sodium.to_base64(bytes, B64); }
    function unb64(text) { return sodium.from_base64(text, B64); }
    /* protocol.evidence.fingerprint: SHA-256 hex, first 24 digits in groups of four */
    function fingerprint(key) {
      var hex = sodium.to_hex(sha256(key)).slice(0, 24);
      return hex.match(/.{4}/g).join(" ");
    }
    function phoneKey() {
      var stored = localStorage.getItem(keyName);
      if (stored) {
        var parsed = JSON.parse(stored);
        return { publicKey: unb64(parsed.pk), privateKey: unb64(parsed.sk) };
      }
      var pair = sodium.crypto_sign_keypair();
      localStorage.setItem(keyName, JSON.stringify({ pk: b64(pair.publicKey), sk: b64(pair.privateKey) }));
      return pair;
    }
    function luhnDigit(digits) {
      var total = 0;
      for (var i = 0; i < digits.length; i++) {
        var value = Number(digits.charAt(digits.length - 1 - i));
        if (i % 2 === 0) { value *= 2; if (value > 9) { value -= 9; } }
        total += value;
      }
      return String((10 - (total % 10)) % 10);
    }
    function receiptCode() {
      var digits = "";
      for (var i = 0; i < 15; i++) { digits += String(sodium.randombytes_uniform(10)); }
      return digits + luhnDigit(digits);
    }
    function pad(content) {
      for (var i = 0; i < BUCKETS.length; i++) {
        if (content.length + 1 <= BUCKETS[i]) {
          var out = new Uint8Array(BUCKETS[i]);
          out.set(content);
          out[content.length] = 0x80;
          return out;
        }
      }
      return null;
    }
    function concat(parts) {
      var size = 0, at = 0;
      parts.forEach(function (p) { size += p.length; });
      var out = new Uint8Array(size);
      parts.forEach(function (p) { out.set(p, at); at += p.length; });
      return out;
    }
    function chosenUnion() { return root.querySelector('input[name="union"]:checked'); }
    function pinState(union) {
      var pinned = localStorage.getItem(pinPrefix + union.value);
      if (pinned === null) { return "new"; }
      return pinned === union.dataset.key ? "pinned" : "changed";
    }
    function refresh() {
      var union = chosenUnion();
      var state = union ? pinState(union) : "new";
      var compared = document.getElementById("compared");
      compared.checked = compared.checked || state === "pinned";
      button.disabled = !union || state === "changed";
      if (state === "changed") { say("changed"); } else { message.hidden = true; }
    }

    /* A1 message, in the field order of protocol.sealing.a1_message */
    function a1Message(pair, category, text, receipt) {
      var anonymous = document.getElementById("anonymous").checked;
      var fields = {
        v: "A1",
        category: category,
        text: text,
        lang: root.dataset.lang,
        receipt: receipt
      };
      if (root.dataset.case) { fields["case"] = root.dataset.case; }
      fields.written = Math.floor(Date.now() / 60000);
      fields.anonymous = anonymous;
      if (!anonymous && root.dataset.name) { fields.name = root.dataset.name; }
      if (!anonymous && root.dataset.document) { fields.document = root.dataset.document; }
      if (root.dataset.replyKey) { fields.reply_key = root.dataset.replyKey; }
      fields.signer = b64(pair.publicKey);
      return utf8.encode(JSON.stringify(fields));
    }

    function send() {
      var union = chosenUnion();
      var category = root.querySelector('input[name="category"]:checked');
      var text = document.getElementById("text").value.normalize("NFC").replace(/\r\n?/g, "\n");
      if (!union) { return; }
      if (pinState(union) === "changed") { say("changed"); return; }
      if (!document.getElementById("compared").checked) { say("compare"); return; }
      if (!category || !text.trim()) { say("empty"); return; }
      if (utf8.encode(text).length > MAX_TEXT_BYTES) { say("long"); return; }
      localStorage.setItem(pinPrefix + union.value, union.dataset.key);
      var pair = phoneKey();
      var receipt = receiptCode();
      var body = a1Message(pair, Number(category.value), text, receipt);
      var domain = utf8.encode("vessel-relay grievance A1\u0000");
      var signature = sodium.crypto_sign_detached(concat([domain, body]), pair.privateKey);
      var padded = pad(concat([utf8.encode("VRA1"), signature, body]));
      if (padded === null) { say("long"); return; }
      var sealed = sodium.crypto_box_seal(padded, unb64(union.dataset.key));
      button.disabled = true;
      var target = "/report/phone/sealed?union=" + encodeURIComponent(union.value);
      if (root.dataset.case) { target += "&case=" + encodeURIComponent(root.dataset.case); }
      fetch(target, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/octet-stream", "x-csrf-token": root.dataset.csrf },
        body: sealed
      }).then(function (response) {
        if (!response.ok) {
          /* the agent's sentence (the channel is full until ..., too long ...), if any */
          return response.json().catch(function () { return {}; }).then(function (refused) {
            var failure = new Error("HTTP " + response.status);
            failure.detail = refused && typeof refused.detail === "string" ? refused.detail : "";
            throw failure;
          });
        }
        return response.json();
      }).then(function (filed) {
        document.getElementById("case").textContent = filed.case_number;
        if (typeof filed.leaves === "string") {  /* when it leaves, in the crew's language */
          var leaves = document.getElementById("leaves");
          leaves.textContent = filed.leaves;
          leaves.hidden = false;
        }
        document.getElementById("receipt").textContent = receipt.match(/.{4}/g).join(" ");
        document.getElementById("done").hidden = false;
        document.getElementById("text").value = "";
        message.hidden = true;
        var kept = JSON.parse(localStorage.getItem("vr.a1.cases") || "[]");
        kept.push({ vessel: vessel, crew: crew, case_number: filed.case_number, receipt: receipt });
        localStorage.setItem("vr.a1.cases", JSON.stringify(kept));
      }).catch(function (failure) {
        button.disabled = false;
        say("failed");
        if (failure && failure.detail) {
          message.textContent = word("failed") + " " + failure.detail;
        }
      });
    }

    var pair = phoneKey();
    document.getElementById("phone-fingerprint").textContent = fingerprint(pair.publicKey);
    root.querySelectorAll('input[name="union"]').forEach(function (union) {
      var shown = union.parentNode.querySelector(".union-fingerprint");
      shown.textContent = fingerprint(unb64(union.dataset.key));
      union.addEventListener("change", refresh);
    });
    button.addEventListener("click", send);
    document.getElementById("no-script").hidden = true;
    root.dataset.ready = "yes";
    refresh();
  }

  window.sodium.ready.then(function () { start(window.sodium); });
}());
