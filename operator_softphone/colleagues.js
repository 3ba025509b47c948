/* The colleagues a call or a chat can be handed to: the operators online, in every transfer picker. */
import { el } from './dom.js';
import { t } from './i18n.js';

/** Keeps `pickers` (the transfer <select>s) filled with the online colleagues the server names. */
export function createColleagues({ socket, pickers }) {
  let colleagues = [];

  function renderColleagues() {
    const online = colleagues.filter((c) => c.presence === 'online');
    for (const select of pickers) {
      const chosen = select.value;
      select.replaceChildren(el('option', { value: '' }, online.length ? t('choose_colleague') : t('nobody_else_online')));
      for (const c of online) {
        const about = { name: c.name, chats: c.chats };
        const line = c.in_call ? t('colleague_in_call', about) : t('colleague', about);
        select.append(el('option', { value: String(c.id) }, line));
      }
      select.value = online.some((c) => String(c.id) === chosen) ? chosen : '';
    }
  }

  socket.on('hello', (frame) => {
    colleagues = frame.operators || [];
    renderColleagues();
  });
  socket.on('operators', (frame) => {
    colleagues = Array.isArray(frame.operators) ? frame.operators : [];
    renderColleagues();
  });
}
