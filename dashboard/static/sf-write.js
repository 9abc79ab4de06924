/*
 * Shopfloor e-boards: the writes a page makes for a signed-in user (stop reasons, andon acknowledgements): a JSON
 * POST with the session cookie and the page's CSRF token (its <meta name="csrf-token">), and what went wrong as
 * text when the dashboard refuses it.
 */

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const csrfToken = csrfMeta ? csrfMeta.content : "";

/** POST `body` as JSON to `url`; the answer's JSON, or an Error whose message is `failed` and the problem's text. */
export async function postJson(url, body, failed) {
  const answer = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrfToken },
    body: JSON.stringify(body || {}),
  });
  if (!answer.ok) throw new Error(await problemText(answer, failed));
  return answer.json();
}

/** `failed` and what went wrong, from an RFC 9457 problem (its `detail`, else `title`) or else the status. */
export async function problemText(answer, failed) {
  let detail = "";
  try {
    const problem = await answer.json();
    detail = problem.detail || problem.title || "";
  } catch (err) {
    detail = "";
  }
  return failed + (detail ? ": " + detail : " (" + answer.status + ")");
}
