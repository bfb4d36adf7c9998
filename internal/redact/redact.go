// Package redact keeps secrets out of what dab prints and logs: the
// passwords, tokens and signatures a URL can carry (user info, Sentinel's
// ?password=, keys of presigned URLs) are masked wherever a URL or an error
// about one is shown.
package redact

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Masked replaces a secret wherever dab shows a URL or an error about one.
const Masked = "xxxxx"

// Unparseable is what URL shows for a URL it cannot parse: such a
// URL is never echoed, because dab cannot tell which part of it is the
// password (a '#' or '?' inside an unescaped password moves the password
// into what looks like a fragment, a query or a port).
const Unparseable = "<unparseable URL, not shown: it may hold a password>"

// Mask hides a secret, keeping enough to tell two secrets apart by length only.
func Mask(s string) string {
	if s == "" {
		return ""
	}
	return "****** (" + strconv.Itoa(len(s)) + " chars)"
}

// secretParam reports whether a query parameter carries a secret. The list
// is deliberately wide (over-masking costs a less useful message, under-
// masking leaks a password): Redis Sentinel's ?password= (the master's
// password) and ?sentinel_password=, tokens, API keys, signatures and
// credentials of presigned URLs.
func secretParam(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.ToLower(name)
	for _, s := range []string{"pass", "pwd", "secret", "token", "key", "auth", "cred", "sig"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// parseForRedaction parses raw the way url.Parse (and so go-redis) does, and
// says whether the result can be shown with its secrets masked. A URL with a
// fragment, or an '@' after the start of its query, is refused: there, an
// unescaped '#' or '?' in a password has cut the URL in the wrong place.
func parseForRedaction(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Fragment != "" || u.RawFragment != "" || strings.Contains(raw, "#") || strings.Contains(u.RawQuery, "@") {
		return nil, false
	}
	return u, true
}

// URL returns raw fit to print or log: the password of its userinfo
// (and a user name given without a password, which some clients take for a
// password), the values of query parameters named like secrets (Sentinel's
// ?password=, ?sentinel_password=, tokens, keys) are replaced with Masked,
// and a URL that does not parse is not shown at all. Every place that shows
// a URL (dab config, error messages, logs) goes through this function.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	u, ok := parseForRedaction(raw)
	if !ok {
		return Unparseable
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Masked)
		} else {
			u.User = url.User(Masked)
		}
	}
	if u.Opaque != "" {
		// scheme:user:password@host (no "//"): url.Parse leaves the userinfo in Opaque.
		if i := strings.LastIndex(u.Opaque, "@"); i >= 0 {
			u.Opaque = Masked + u.Opaque[i:]
		}
	}
	u.RawQuery = mapQuery(u.RawQuery, func(k, v string) string {
		if secretParam(k) {
			return Masked
		}
		return v
	})
	return u.String()
}

// mapQuery rewrites the value of every key=value pair of a raw query,
// keeping everything else as written. Pairs are split at '&' and at ';'
// (which Go refuses but other parsers accept), so a secret behind a ';' is
// still found.
func mapQuery(raw string, f func(k, v string) string) string {
	var b strings.Builder
	for raw != "" {
		end := strings.IndexAny(raw, "&;")
		pair, sep := raw, ""
		if end >= 0 {
			pair, sep, raw = raw[:end], raw[end:end+1], raw[end+1:]
		} else {
			raw = ""
		}
		if k, v, ok := strings.Cut(pair, "="); ok {
			pair = k + "=" + f(k, v)
		}
		b.WriteString(pair + sep)
	}
	return b.String()
}

// urlSecrets lists the secrets URL hides in raw, in the forms they may
// take in a message (as written, and unescaped), longest first so that a
// secret containing another is replaced whole.
func urlSecrets(raw string, u *url.URL) []string {
	seen := map[string]bool{}
	add := func(forms ...string) {
		for _, s := range forms {
			if s != "" {
				seen[s] = true
			}
		}
	}
	if u.User != nil {
		p, has := u.User.Password()
		if !has {
			p = u.User.Username()
		}
		add(p, url.QueryEscape(p), url.PathEscape(p))
		// The userinfo as written: percent-encodings differ between encoders.
		rest := strings.TrimPrefix(raw, "//")
		if i := strings.Index(raw, "://"); i >= 0 {
			rest = raw[i+3:]
		}
		if end := strings.IndexAny(rest, "/?"); end >= 0 {
			rest = rest[:end]
		}
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			if _, pw, ok := strings.Cut(rest[:i], ":"); ok {
				add(pw)
			} else {
				add(rest[:i])
			}
		}
	}
	if u.Opaque != "" {
		if i := strings.LastIndex(u.Opaque, "@"); i >= 0 {
			add(u.Opaque[:i])
			if _, pw, ok := strings.Cut(u.Opaque[:i], ":"); ok {
				add(pw)
			}
		}
	}
	mapQuery(u.RawQuery, func(k, v string) string {
		if secretParam(k) {
			add(v)
			if dv, err := url.QueryUnescape(v); err == nil {
				add(dv)
			}
		}
		return v
	})
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Text returns text with every URL of rawURLs shown as URL shows
// it and every secret those URLs carry masked, for messages that may quote a
// URL or part of one (a library's parse error, a store description). When a
// URL does not parse, its secrets cannot be told apart from the rest, so a
// text that quotes any part of it is replaced whole.
func Text(text string, rawURLs ...string) string {
	for _, raw := range rawURLs {
		if raw == "" {
			continue
		}
		u, ok := parseForRedaction(raw)
		if !ok {
			if mayQuote(text, raw) {
				return "the URL does not parse (not shown: it may hold a password); percent-encode special characters of a password, such as %40 for @ and %23 for #"
			}
			continue
		}
		text = strings.ReplaceAll(text, raw, URL(raw))
		for _, s := range urlSecrets(raw, u) {
			text = strings.ReplaceAll(text, s, Masked)
		}
	}
	return text
}

// mayQuote reports whether text contains raw or a piece of it long enough to
// be part of a password (url.Parse errors quote the URL or its bad port).
func mayQuote(text, raw string) bool {
	if strings.Contains(text, raw) || strings.Contains(text, strconv.Quote(raw)) {
		return true
	}
	// Any 4-character piece after the scheme: short enough to catch a
	// quoted port or host, long enough not to match ordinary words by chance.
	body := raw
	if _, rest, ok := strings.Cut(raw, "://"); ok {
		body = rest
	}
	const piece = 4
	for i := 0; i+piece <= len(body); i++ {
		if strings.Contains(text, body[i:i+piece]) {
			return true
		}
	}
	return len(body) < piece && body != "" && strings.Contains(text, body)
}

// Error returns err with its message passed through Text for
// rawURLs; errors.Is and errors.As still see err. It returns nil for nil.
func Error(err error, rawURLs ...string) error {
	if err == nil {
		return nil
	}
	return &redactedError{err: err, msg: Text(err.Error(), rawURLs...)}
}

type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
