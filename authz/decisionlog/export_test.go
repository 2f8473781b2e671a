package decisionlog

// SealForTest seals an object body (without its closing brace).
func SealForTest(body string) string { return string(seal([]byte(body + "}"))) }

func AppendEntryForTest(e *Entry) ([]byte, error) { return appendEntry(nil, e, []byte(e.Prev)) }
