/* The operator's socket (/ws/operator, docs/signaling.md): connects, keeps itself alive with pings,
 * comes back by itself with a backoff, and hands each frame to whoever asked for its type.
 */

const PING_EVERY_MS = 25000;
const RECONNECT_DELAYS_MS = [1000, 2000, 5000];
const SIGNED_OUT = 4401; // the server's close code for a session that has ended

/** How long to wait before try number `attempt` (from 0) to get something back. */
export function retryDelay(attempt) {
  return RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
}

/**
 * The socket, not yet connected: `connect()` opens it, `send(frame)` sends one frame, `on(type, fn)`
 * calls fn with every frame of that type and returns the function that stops it, `drop()` lets it
 * go and comes back on a new one. `onOpen()` runs when it is up, `onClose({ retrying })` when it went
 * down (a signed-out session goes to the sign-in page instead of retrying).
 */
export function operatorSocket({ onOpen, onClose }) {
  const handlers = new Map(); // frame type → Set of functions
  let ws = null;
  let attempt = 0;
  let pingTimer = null;

  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = ws = new WebSocket(`${scheme}//${location.host}/ws/operator`);
    socket.onopen = () => {
      attempt = 0;
      pingTimer = setInterval(() => send({ type: 'ping' }), PING_EVERY_MS);
      onOpen();
    };
    socket.onmessage = (event) => dispatch(event.data);
    socket.onclose = (event) => {
      clearInterval(pingTimer);
      ws = null;
      const retrying = event.code !== SIGNED_OUT;
      onClose({ retrying });
      // Not the server's: a call in progress waits for the next hello to resume (call.js).
      dispatch(JSON.stringify({ type: 'socket.closed', code: event.code }));
      if (!retrying) {
        location.href = '/operator/login';
        return;
      }
      // Jittered, so a restarted server is not met by every softphone at once.
      const delay = retryDelay(attempt) * (0.5 + Math.random());
      attempt += 1;
      setTimeout(connect, delay);
    };
  }

  /**
   * Lets the socket go at once, as if it had closed, and comes back on a new one: a socket left on an
   * address this machine no longer has stays open without carrying anything (no close for minutes).
   */
  function drop() {
    const old = ws;
    if (!old) return;
    old.onclose({ code: 1006 });
    old.onmessage = old.onclose = null;
    old.close();
  }

  /** Sends one frame; false when the socket is down. */
  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function on(type, fn) {
    if (!handlers.has(type)) handlers.set(type, new Set());
    handlers.get(type).add(fn);
    return () => handlers.get(type).delete(fn);
  }

  // Frames of a type nobody asked for (pong, and frames a newer server may add) are dropped.
  function dispatch(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (e) { return; }
    if (!frame || typeof frame !== 'object') return;
    for (const fn of handlers.get(frame.type) || []) fn(frame);
  }

  return { connect, send, on, drop };
}
