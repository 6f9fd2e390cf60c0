// A small Socket.IO (Engine.IO 4) client over one websocket: connect with the session cookie,
// answer pings, subscribe with acks, and resubscribe with the last resume token after a
// reconnect, so no change is missed.

export class Live {
  constructor() {
    this.subscriptions = new Map(); // local key -> {options, handler, id, resume}
    this.acks = new Map();
    this.nextAck = 1;
    this.listeners = new Set();
    this.open();
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(`${scheme}://${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ready = false;
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onclose = () => {
      this.ready = false;
      this.status("offline");
      if (!this.closed) setTimeout(() => this.open(), 1500);
    };
  }

  status(state) {
    for (const listener of this.listeners) listener(state);
  }

  receive(text) {
    const type = text[0];
    if (type === "0") { this.ws.send("40"); return; }
    if (type === "2") { this.ws.send("3"); return; }
    if (type !== "4") return;
    const kind = text[1];
    const body = text.slice(2);
    if (kind === "0") {
      this.ready = true;
      this.status("live");
      for (const sub of this.subscriptions.values()) this.send(sub);
    } else if (kind === "4") {
      this.status("refused");
    } else if (kind === "3") {
      const match = /^(\d+)(.*)$/.exec(body);
      const callback = match && this.acks.get(Number(match[1]));
      if (callback) { this.acks.delete(Number(match[1])); callback(JSON.parse(match[2])[0]); }
    } else if (kind === "2") {
      const [name, payload] = JSON.parse(body.replace(/^\d+/, ""));
      if (name !== "change") return;
      for (const sub of this.subscriptions.values()) {
        if (sub.id === payload.subscription) {
          sub.resume = payload.resume;
          sub.handler(payload);
        }
      }
    }
  }

  send(sub) {
    const ack = this.nextAck++;
    const options = sub.resume ? { ...sub.options, resume: sub.resume } : sub.options;
    this.acks.set(ack, (reply) => {
      if (reply && reply.success) sub.id = reply.subscription;
      else if (sub.resume) { sub.resume = null; this.send(sub); } // too old: from now on
    });
    this.ws.send(`42${ack}${JSON.stringify(["subscribe", options])}`);
  }

  subscribe(options, handler) {
    const key = Symbol("subscription");
    const sub = { options, handler, id: null, resume: null };
    this.subscriptions.set(key, sub);
    if (this.ready) this.send(sub);
    return () => {
      this.subscriptions.delete(key);
      if (sub.id && this.ready) {
        this.ws.send(`42${JSON.stringify(["unsubscribe", { subscription: sub.id }])}`);
      }
    };
  }

  close() {
    this.closed = true;
    this.ws.close();
  }
}
