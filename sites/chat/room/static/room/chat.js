// Open the room's socket (same host, ws: or wss: as the page) and show
// every message of the room; the form sends one.
const messages = document.getElementById("messages");
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(scheme + "//" + location.host + messages.dataset.socket);
const status = document.getElementById("status");

socket.onopen = () => { status.textContent = "connected"; };
socket.onclose = (event) => { status.textContent = "closed (" + event.code + ")"; };
socket.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  messages.appendChild(item);
};
document.getElementById("say").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (text.value) socket.send(text.value);
  text.value = "";
};
