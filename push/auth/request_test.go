package auth

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFromRequest(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxTokenLength+1)
	tests := []struct {
		name       string
		target     string
		headers    []string
		allowQuery bool
		want       string // the token, or the error message
		wantErr    bool
	}{
		{"bearer", "/v1/notifications", []string{"Bearer abc.def.ghi"}, false, "abc.def.ghi", false},
		{"lower-case scheme", "/", []string{"bearer abc"}, false, "abc", false},
		{"upper-case scheme", "/", []string{"BEARER abc"}, false, "abc", false},
		{"extra spaces", "/", []string{"  Bearer    abc  "}, false, "abc", false},
		{"missing", "/", nil, false, "missing token", true},
		{"empty header", "/", []string{""}, false, "missing token", true},
		{"bearer without token", "/", []string{"Bearer"}, false, "missing token", true},
		{"bearer and spaces", "/", []string{"Bearer   "}, false, "missing token", true},
		{"basic", "/", []string{"Basic YWxpY2U6cHc="}, false, "authorization scheme must be Bearer", true},
		{"no scheme", "/", []string{"abc.def.ghi"}, false, "authorization scheme must be Bearer", true},
		{"two headers", "/", []string{"Bearer a", "Bearer b"}, false, "more than one Authorization header", true},
		{"too long", "/", []string{"Bearer " + long}, false, "token too long", true},
		{"query not allowed", "/v1/notifications?token=abc", nil, false, "missing token", true},
		{"query", "/v1/ws?token=abc.def&cursor=5", nil, true, "abc.def", false},
		{"query escaped", "/v1/ws?token=a%2Bb", nil, true, "a+b", false},
		{"query empty", "/v1/ws?token=", nil, true, "missing token", true},
		{"query twice", "/v1/ws?token=a&token=b", nil, true, "more than one token parameter", true},
		{"query too long", "/v1/ws?token=" + long, nil, true, "token too long", true},
		{"header wins", "/v1/ws?token=fromquery", []string{"Bearer fromheader"}, true, "fromheader", false},
		{"bad header is not skipped", "/v1/ws?token=fromquery", []string{"Basic x"}, true, "authorization scheme must be Bearer", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := FromRequest(r, tt.allowQuery)
			if !tt.wantErr {
				if err != nil || got != tt.want {
					t.Fatalf("FromRequest = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("FromRequest = %q, want error %q", got, tt.want)
			}
			if got != "" {
				t.Errorf("token %q returned with an error", got)
			}
			if !errors.Is(err, ErrUnauthorized) || err.Error() != tt.want {
				t.Errorf("error %q (unauthorized %v), want %q", err, errors.Is(err, ErrUnauthorized), tt.want)
			}
			if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "aaaa") {
				t.Errorf("error quotes the token")
			}
		})
	}
}
