(function () {
  "use strict";
  var box = document.getElementById("voice");
  if (!box || !window.fetch || !window.Blob) { return; }
  var limit = Number(box.dataset.limit);
  var button = document.getElementById("voice-record");
  var player = document.getElementById("voice-play");
  var file = document.getElementById("voice-file");
  var send = document.getElementById("voice-send");
  var note = document.getElementById("voice-message");
  var clock = document.getElementById("voice-clock");
  var active = false, stopSoon = false, recorder = null, chunks = [], recording = null, started = 0, ticker = null, url = null;
  function word(name) {
    var item = box.querySelector('[data-word="' + name + '"]');
    return item ? item.textContent : name;
  }
  function say(text) { note.textContent = text; note.hidden = !text; }
  function take(blob) {
    recording = blob;
    if (url) { URL.revokeObjectURL(url); }
    url = URL.createObjectURL(blob);
    player.src = url;
    player.hidden = false;
    send.disabled = false;
  }
  function stop() {
    if (recorder && recorder.state === "recording") { recorder.stop(); } else { stopSoon = active; }
  }
  function start() {
    active = true;
    stopSoon = false;
    recorder = null;
    say("");
    navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
      var types = ["audio/webm;codecs=opus", "audio/mp4", "audio/ogg;codecs=opus"];
      var type = types.filter(function (t) { return MediaRecorder.isTypeSupported(t); })[0];
      recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
      chunks = [];
      recorder.ondataavailable = function (event) { if (event.data.size) { chunks.push(event.data); } };
      recorder.onstop = function () {
        clearInterval(ticker);
        active = false;
        stream.getTracks().forEach(function (track) { track.stop(); });
        button.textContent = word("record");
        box.dataset.state = "recorded";
        take(new Blob(chunks, { type: recorder.mimeType || type || "" }));
      };
      recorder.start(250);
      if (stopSoon) { recorder.stop(); }
      started = Date.now();
      box.dataset.state = "recording";
      button.textContent = word("stop");
      ticker = setInterval(function () {
        var seconds = Math.floor((Date.now() - started) / 1000);
        clock.textContent = seconds + " / " + limit;
        box.dataset.seconds = String(seconds);
        if (seconds >= limit) { stop(); }
      }, 200);
    }, function () { active = false; say(word("no-microphone")); });
  }
  var canRecord = window.isSecureContext && navigator.mediaDevices &&
    navigator.mediaDevices.getUserMedia && window.MediaRecorder;
  if (canRecord) {
    /* a tap starts and a second tap stops; held down, it records until let go */
    var pressed = 0, byPress = false;
    button.hidden = false;
    button.addEventListener("pointerdown", function () {
      if (active) { byPress = false; return; }
      pressed = Date.now();
      byPress = true;
      start();
    });
    button.addEventListener("pointerup", function () {
      if (byPress && Date.now() - pressed > 800) { stop(); }
    });
    button.addEventListener("click", function () {
      if (byPress) { byPress = false; return; }
      if (active) { stop(); } else { start(); }
    });
  }
  file.addEventListener("change", function () {
    if (file.files && file.files[0]) { say(""); take(file.files[0]); }
  });
  send.addEventListener("click", function () {
    if (!recording) { return; }
    /* the choices the page's form holds (contact; or category, union, anonymous) */
    var query = [], missing = false;
    box.dataset.fields.split(" ").forEach(function (name) {
      var input = document.querySelector("input[name=" + name + "]:checked");
      var any = document.querySelector("input[name=" + name + "]");
      if (input) { query.push(name + "=" + encodeURIComponent(input.value)); }
      else if (any && any.type === "radio") { missing = true; }
    });
    if (missing) { say(word("missing")); return; }
    if (recording.size > Number(box.dataset.maxBytes)) { say(word("too-big")); return; }
    send.disabled = true;
    say("");
    box.dataset.state = "sending";
    fetch(box.dataset.action + "?" + query.join("&"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": box.dataset.csrf, "content-type": recording.type || "application/octet-stream" },
      body: recording
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (response.status === 201 && answer.location) { window.location.assign(answer.location); return; }
        if (response.status === 201 && answer.case_number) {
          /* a spoken report: its case number and receipt code, shown here once */
          var done = document.getElementById("voice-done");
          document.getElementById("voice-case").textContent = answer.case_number;
          document.getElementById("voice-receipt").textContent = answer.receipt_code;
          document.getElementById("voice-leaves").textContent = answer.leaves;
          done.hidden = false;
          box.dataset.state = "sent";
          recording = null;
          player.removeAttribute("src");
          if (url) { URL.revokeObjectURL(url); url = null; }
          return;
        }
        box.dataset.state = "refused";
        say(answer.detail || word("failed"));
        send.disabled = false;
      });
    }).catch(function () {
      box.dataset.state = "refused";
      say(word("failed"));
      send.disabled = false;
    });
  });
  box.hidden = false;
})();
