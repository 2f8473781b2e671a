package decisionlog

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// appendEntry appends e as encoding/json would marshal it (the same bytes:
// field order, omitempty, HTML-safe string escaping, RFC 3339 time, base64
// request), with prev as the "prev" member. It exists because reflection
// was a large share of the writer's CPU; a test and a fuzz target hold it
// to json.Marshal.
func appendEntry(dst []byte, e *Entry, prev []byte) ([]byte, error) {
	dst = append(dst, `{"decision_id":`...)
	dst = appendJSONString(dst, e.DecisionID)
	dst = append(dst, `,"time":"`...)
	var err error
	if dst, err = e.Time.AppendText(dst); err != nil {
		return dst, fmt.Errorf("decision time: %w", err)
	}
	dst = append(dst, '"')
	dst = appendOptString(dst, `,"kind":`, e.Kind)
	dst = appendOptString(dst, `,"source":`, e.Source)
	dst = appendOptString(dst, `,"destination":`, e.Destination)
	dst = appendOptString(dst, `,"method":`, e.Method)
	dst = appendOptString(dst, `,"path":`, e.Path)
	dst = append(dst, `,"result":`...)
	dst = appendJSONString(dst, e.Result)
	dst = append(dst, `,"reason":`...)
	dst = appendJSONString(dst, e.Reason)
	dst = appendOptString(dst, `,"detail":`, e.Detail)
	dst = appendOptString(dst, `,"revision":`, e.Revision)
	dst = append(dst, `,"latency_ns":`...)
	dst = strconv.AppendInt(dst, e.LatencyNS, 10)
	if e.DryRun {
		dst = append(dst, `,"dry_run":true`...)
	}
	if s := e.Shadow; s != nil {
		dst = append(dst, `,"shadow":{`...)
		if s.Revision != "" {
			dst = append(dst, `"revision":`...)
			dst = appendJSONString(dst, s.Revision)
			dst = append(dst, ',')
		}
		dst = append(dst, `"result":`...)
		dst = appendJSONString(dst, s.Result)
		dst = append(dst, `,"reason":`...)
		dst = appendJSONString(dst, s.Reason)
		if s.Disagree {
			dst = append(dst, `,"disagree":true`...)
		}
		dst = append(dst, '}')
	}
	if len(e.Request) > 0 {
		dst = append(dst, `,"request_pb":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Request)
		dst = append(dst, '"')
	}
	if e.BodyTruncated {
		dst = append(dst, `,"body_truncated":true`...)
	}
	if e.BodyLen != 0 {
		dst = strconv.AppendInt(append(dst, `,"body_len":`...), e.BodyLen, 10)
	}
	dst = appendOptString(dst, `,"line_truncated":`, e.LineTruncated)
	if e.TornBytes != 0 {
		dst = strconv.AppendInt(append(dst, `,"torn_bytes":`...), e.TornBytes, 10)
	}
	dst = appendOptString(dst, `,"torn_sha256":`, e.TornSHA256)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	dst = append(dst, `,"prev":`...)
	dst = appendJSONString(dst, prev)
	return append(dst, '}'), nil
}

func appendOptString(dst []byte, member, s string) []byte {
	if s == "" {
		return dst
	}
	return appendJSONString(append(dst, member...), s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s exactly as encoding/json does by default:
// <, > and & escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029
// escaped.
func appendJSONString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := decodeRune(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func decodeRune[S ~string | ~[]byte](s S) (rune, int) {
	var buf [utf8.UTFMax]byte
	n := copy(buf[:], s[:min(len(s), utf8.UTFMax)])
	return utf8.DecodeRune(buf[:n])
}
