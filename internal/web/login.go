// The console's login and logout: a token becomes a session cookie.

package web

import (
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/dab-assets/dab/internal/api"
)

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", "Log in", map[string]string{"Next": safeNext(r.URL.Query().Get("next"))}, "")
}

// safeNext keeps redirects on this site.
func safeNext(n string) string {
	// Browsers drop tabs and newlines from URLs ("/\t/evil.example" becomes
	// "//evil.example"): any control or space character is refused too.
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.Contains(n, `\`) ||
		strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f || unicode.IsSpace(r) }) {
		return "/assets"
	}
	return n
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.render(w, r, formStatus(err), "login", "Log in", map[string]string{"Next": "/assets"}, "the form was malformed or too large")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	caller, err := c.d.Server.Authenticate(r, strings.TrimSpace(r.PostForm.Get("token")))
	var throttled *api.ThrottledError
	switch {
	case errors.As(err, &throttled):
		throttled.SetRetryAfter(w.Header())
		c.render(w, r, http.StatusTooManyRequests, "login", "Log in", map[string]string{"Next": next}, throttled.Error())
		return
	case err != nil:
		c.render(w, r, http.StatusUnauthorized, "login", "Log in", map[string]string{"Next": next}, "that token is not valid")
		return
	}
	id, err := c.d.Sessions.Create(r.Context(), caller)
	if err != nil {
		c.render(w, r, http.StatusServiceUnavailable, "login", "Log in", map[string]string{"Next": next}, "cannot start a session: Redis does not answer ("+err.Error()+"); try again once it is back (dab dev restarts its redis-server by itself)")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: api.SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.d.Sessions.TTL / time.Second)})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(api.SessionCookie); err == nil {
		c.d.Sessions.Delete(r.Context(), ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: api.SessionCookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
