package storage

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dab-assets/dab/internal/naming"
)

// Object metadata: every object dab uploads carries, as S3 user metadata
// (x-amz-meta-*), what its asset record holds that cannot be derived again,
// so that `dab reconcile` can rebuild a record that Redis lost. The scheme
// (version 1):
//
//	sha256       hex SHA-256 of the bytes (MetaSHA256; verification relies on it)
//	dab-v        "1": the scheme's version; an object without it was not written by this scheme
//	dab-type     asset type (naming.ValidateType)
//	dab-size     size in bytes, decimal (checked against the object's length)
//	dab-source   the producer: cli, http, watcher
//	dab-created  when dab received the file, UTC, RFC 3339 with nanoseconds
//	dab-meta     the caller's metadata (price, ...): key=value pairs joined
//	             by '&', sorted by key
//
// The path is not stored: the object key is "type/path" (naming.Key), so
// the path is the key without "type/"; storing it again would spend up to
// 3 KB of the 2 KB S3 allows. The content type is the object's own
// Content-Type. Plugin metadata is not stored: plugins derive it again.
//
// Values are ASCII (S3 sends user metadata as HTTP headers): every byte
// outside '!'..'~', and '%', '&' and '=', is written as %XX (upper-case
// hex), so non-ASCII text (a price note with "é"), spaces and the pair
// separators survive. Caller metadata keys are naming.CheckMetadataKey's
// (lower-case ASCII letters, digits, '-', '_', '.'), which need no escaping.
const (
	MetaVersion = "dab-v"
	MetaType    = "dab-type"
	MetaSize    = "dab-size"
	MetaSource  = "dab-source"
	MetaCreated = "dab-created"
	MetaCaller  = "dab-meta"

	// metaVersion1 is the only version this dab writes and reads.
	metaVersion1 = "1"
	// createdLayout has a fixed width, so the size of dab's own fields
	// does not depend on the time.
	createdLayout = "2006-01-02T15:04:05.000000000Z"
)

// Limits of object metadata.
const (
	// MetadataBytesMax is S3's limit on an object's user metadata: 2 KB,
	// counted as the bytes of every key and value (without "x-amz-meta-").
	MetadataBytesMax = 2048
	// MetadataReservedBytes is the part of MetadataBytesMax that dab's own
	// fields may take (all but dab-meta's value); a test checks that the
	// largest possible fields fit in it.
	MetadataReservedBytes = 256
	// MetadataCallerBytesMax is what remains for the caller's metadata,
	// encoded as dab-meta's value. The intakes refuse more (MetadataFits).
	MetadataCallerBytesMax = MetadataBytesMax - MetadataReservedBytes
	// sourceLenMax bounds dab-source (a name dab itself chooses).
	sourceLenMax = 32
)

// Errors of object metadata.
var (
	// ErrMetadataTooLarge: the caller's metadata would not fit in S3's
	// 2 KB of user metadata; shorter values are needed.
	ErrMetadataTooLarge = errors.New("metadata too large")
	// ErrNoRecordMetadata: the object carries no dab record metadata (it
	// was put into the bucket by something else, or by a dab from before
	// records were kept on objects).
	ErrNoRecordMetadata = errors.New("object has no dab record metadata")
	// ErrBadRecordMetadata: the object's dab metadata is damaged or
	// disagrees with the object; the error says which field.
	ErrBadRecordMetadata = errors.New("bad dab record metadata")
)

// ObjectMeta is what an object says about its asset record.
type ObjectMeta struct {
	Key         string // the object key, "type/path"
	Type        string
	Path        string
	SHA256      string // hex
	Size        int64
	ContentType string // the object's Content-Type, not user metadata
	Source      string
	CreatedAt   time.Time
	// Metadata is the caller's metadata (such as "price"), not the plugins'.
	Metadata map[string]string
}

// EncodeMetadata builds the user metadata of an object from m (m.Key,
// m.Path and m.ContentType are not part of it; see the scheme above). It
// refuses metadata that S3 would refuse, with an error wrapping
// ErrMetadataTooLarge.
func EncodeMetadata(m ObjectMeta) (map[string]string, error) {
	if err := MetadataFits(m.Metadata); err != nil {
		return nil, err
	}
	if len(m.Source) > sourceLenMax {
		return nil, fmt.Errorf("storage: source %q is longer than %d bytes", m.Source, sourceLenMax)
	}
	if len(m.Type) > naming.MaxTypeLen {
		return nil, fmt.Errorf("storage: asset type %q is longer than %d bytes", m.Type, naming.MaxTypeLen)
	}
	out := map[string]string{
		MetaSHA256:  m.SHA256,
		MetaVersion: metaVersion1,
		MetaType:    escapeValue(m.Type),
		MetaSize:    strconv.FormatInt(m.Size, 10),
		MetaSource:  escapeValue(m.Source),
		MetaCreated: m.CreatedAt.UTC().Format(createdLayout),
	}
	if len(m.Metadata) > 0 {
		out[MetaCaller] = encodeCaller(m.Metadata)
	}
	if n := MetadataBytes(out); n > MetadataBytesMax {
		// Unreachable with the bounds above; kept so S3 never sees it.
		return nil, fmt.Errorf("storage: %w: object metadata takes %d bytes, S3 allows %d", ErrMetadataTooLarge, n, MetadataBytesMax)
	}
	return out, nil
}

// MetadataBytes is the size of user metadata as S3 counts it against
// MetadataBytesMax: the bytes of every key and value.
func MetadataBytes(md map[string]string) int {
	n := 0
	for k, v := range md {
		n += len(k) + len(v)
	}
	return n
}

// MetadataFits checks that the caller's metadata fits in the part of S3's
// 2 KB of user metadata that dab leaves to it. The intakes (HTTP, tus,
// `dab upload --meta`) call it, so a file never reaches the spool with
// metadata its upload would be refused for. Its error wraps
// ErrMetadataTooLarge and names the limit.
func MetadataFits(md map[string]string) error {
	if len(md) == 0 {
		return nil
	}
	if n := len(MetaCaller) + len(encodeCaller(md)); n > MetadataCallerBytesMax {
		return fmt.Errorf("%w: the metadata takes %d bytes as S3 object metadata (keys, values and separators; each byte of a non-ASCII character, a space, '%%', '&' or '=' takes 3), and at most %d fit: S3 allows %d bytes (2 KB) of metadata per object and dab keeps %d for the record's own fields: shorten or drop values",
			ErrMetadataTooLarge, n, MetadataCallerBytesMax, MetadataBytesMax, MetadataReservedBytes)
	}
	return nil
}

// ParseMetadata reads what an object says about its asset record: key,
// contentType and size are the object's own, md its user metadata (keys
// in any case). An object without dab-v is ErrNoRecordMetadata; damaged or
// inconsistent metadata is ErrBadRecordMetadata. The metadata comes from
// outside (anyone who may write to the bucket): it is checked with the
// naming rules of the intakes.
func ParseMetadata(key, contentType string, size int64, md map[string]string) (ObjectMeta, error) {
	lower := make(map[string]string, len(md))
	for k, v := range md {
		lower[strings.ToLower(k)] = v
	}
	bad := func(format string, args ...any) (ObjectMeta, error) {
		return ObjectMeta{}, fmt.Errorf("storage: %s: %w: %s", key, ErrBadRecordMetadata, fmt.Sprintf(format, args...))
	}
	v, ok := lower[MetaVersion]
	if !ok {
		return ObjectMeta{}, fmt.Errorf("storage: %s: %w", key, ErrNoRecordMetadata)
	}
	if v != metaVersion1 {
		return bad("%s %q: this dab reads version %s only (a newer dab wrote it?)", MetaVersion, clipValue(v), metaVersion1)
	}
	m := ObjectMeta{Key: key, ContentType: contentType, SHA256: lower[MetaSHA256]}
	var err error
	if m.Type, err = unescapeValue(lower[MetaType]); err != nil {
		return bad("%s: %v", MetaType, err)
	}
	if err := naming.ValidateType(m.Type); err != nil {
		return bad("%s: %v", MetaType, err)
	}
	p, found := strings.CutPrefix(key, m.Type+"/")
	if !found {
		return bad("the key does not start with its type %q", m.Type)
	}
	if k, err := naming.Key(m.Type, p); err != nil || k != key {
		return bad("the key is not one dab makes for type %q (%v)", m.Type, err)
	}
	m.Path = p
	if !isHexSHA256(m.SHA256) {
		return bad("%s %q is not 64 lower-case hex digits", MetaSHA256, clipValue(m.SHA256))
	}
	if m.Size, err = strconv.ParseInt(lower[MetaSize], 10, 64); err != nil || m.Size < 0 || strconv.FormatInt(m.Size, 10) != lower[MetaSize] {
		return bad("%s %q is not a size in plain digits", MetaSize, clipValue(lower[MetaSize]))
	}
	if m.Size != size {
		return bad("%s is %d, the object has %d bytes", MetaSize, m.Size, size)
	}
	if m.Source, err = unescapeValue(lower[MetaSource]); err != nil {
		return bad("%s: %v", MetaSource, err)
	}
	if len(m.Source) > sourceLenMax {
		return bad("%s is longer than %d bytes", MetaSource, sourceLenMax)
	}
	if m.CreatedAt, err = time.Parse(createdLayout, lower[MetaCreated]); err != nil {
		return bad("%s %q is not a time such as %s", MetaCreated, clipValue(lower[MetaCreated]), createdLayout)
	}
	if m.Metadata, err = decodeCaller(lower[MetaCaller]); err != nil {
		return bad("%s: %v", MetaCaller, err)
	}
	return m, nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// encodeCaller writes caller metadata as dab-meta's value.
func encodeCaller(md map[string]string) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(escapeValue(k))
		b.WriteByte('=')
		b.WriteString(escapeValue(md[k]))
	}
	return b.String()
}

// decodeCaller reads dab-meta's value; keys must be valid caller keys
// (naming.CheckMetadataKey) and appear once.
func decodeCaller(s string) (map[string]string, error) {
	md := map[string]string{}
	if s == "" {
		return md, nil
	}
	for _, pair := range strings.Split(s, "&") {
		ek, ev, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value", clipValue(pair))
		}
		k, err := unescapeValue(ek)
		if err != nil {
			return nil, err
		}
		if err := naming.CheckMetadataKey(k); err != nil {
			return nil, err
		}
		if _, dup := md[k]; dup {
			return nil, fmt.Errorf("key %q appears twice", k)
		}
		if md[k], err = unescapeValue(ev); err != nil {
			return nil, err
		}
	}
	return md, nil
}

const upperHex = "0123456789ABCDEF"

// escapeValue percent-encodes every byte outside '!'..'~', and '%', '&'
// and '='.
func escapeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '%' || c == '&' || c == '=' {
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// unescapeValue is escapeValue's inverse. It accepts only what escapeValue
// writes, so one value has one encoding.
func unescapeValue(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", fmt.Errorf("%q ends inside a %%XX escape", clipValue(s))
			}
			hi, lo := strings.IndexByte(upperHex, s[i+1]), strings.IndexByte(upperHex, s[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%q has a bad %%XX escape (upper-case hex digits expected)", clipValue(s))
			}
			d := byte(hi<<4 | lo)
			if !(d < '!' || d > '~' || d == '%' || d == '&' || d == '=') {
				return "", fmt.Errorf("%q escapes %q, which is written as itself", clipValue(s), string(d))
			}
			b.WriteByte(d)
			i += 2
		case c < '!' || c > '~' || c == '&' || c == '=':
			return "", fmt.Errorf("%q has byte 0x%02x, which must be escaped", clipValue(s), c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// clipValue shortens a value quoted in an error message.
func clipValue(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
