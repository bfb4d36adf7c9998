// Progress for large uploads. Without JavaScript the form posts as usual.
(function () {
  var form = document.getElementById("upload");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var bar = document.getElementById("progress"), text = document.getElementById("progress-text");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    bar.hidden = false;
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) {
        bar.value = Math.round(100 * e.loaded / e.total);
        text.textContent = bar.value + "% of " + Math.round(e.total / 1048576) + " MiB";
      }
    };
    xhr.onload = function () {
      document.open();
      document.write(xhr.responseText);
      document.close();
    };
    xhr.onerror = function () { text.textContent = "the upload failed: check the connection and send it again"; };
    xhr.send(new FormData(form));
  });
})();
