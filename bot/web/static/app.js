// videobot gallery: hover-play, infinite scroll, filters that apply at once. No dependencies.
"use strict";

function wireHoverPlay(root) {
  root.querySelectorAll(".card").forEach(function (card) {
    if (card.dataset.wired) return;
    card.dataset.wired = "1";
    var video = card.querySelector("video.hoverplay");
    if (!video) return;
    card.addEventListener("mouseenter", function () {
      if (!video.getAttribute("src")) video.setAttribute("src", video.dataset.src);
      var playing = video.play();
      if (playing && playing.catch) playing.catch(function () {});
    });
    card.addEventListener("mouseleave", function () {
      video.pause();
      try { video.currentTime = 0; } catch (e) {}
    });
  });
}

function wireInfiniteScroll() {
  var more = document.getElementById("more");
  var grid = document.getElementById("grid");
  if (!more || !grid || !("IntersectionObserver" in window)) return;
  var loading = false;
  var observer = new IntersectionObserver(function (entries) {
    if (!entries[0].isIntersecting || loading) return;
    loading = true;
    var url = new URL(more.href);
    url.searchParams.set("partial", "1");
    fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) throw new Error(response.status);
      var next = response.headers.get("X-Next-After");
      return response.text().then(function (html) {
        grid.insertAdjacentHTML("beforeend", html);
        wireHoverPlay(grid);
        if (next) {
          var following = new URL(more.href);
          following.searchParams.set("after", next);
          more.href = following.toString();
        } else {
          observer.disconnect();
          more.parentNode.removeChild(more);
        }
        loading = false;
      });
    }).catch(function () { observer.disconnect(); });  // the link still works by hand
  }, { rootMargin: "600px" });
  observer.observe(more);
}

function wireFilters() {
  var form = document.getElementById("filters");
  if (!form) return;
  form.querySelectorAll("select, input[type=date]").forEach(function (field) {
    field.addEventListener("change", function () { form.requestSubmit ? form.requestSubmit() : form.submit(); });
  });
  // Empty fields stay out of the address: /?q=kite rather than /?q=kite&user=&channel=...
  form.addEventListener("submit", function () {
    form.querySelectorAll("input, select").forEach(function (field) { if (!field.value) field.disabled = true; });
  });
}

function wireConfirms() {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  wireHoverPlay(document);
  wireInfiniteScroll();
  wireFilters();
  wireConfirms();
});
