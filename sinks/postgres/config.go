package postgres

import (
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/pspf/pspf-edge/agent"
)

// Config is the PostgreSQL sink's config.
type Config struct {
	URL      string `yaml:"url" doc:"postgres://user@host:5432/database?sslmode=verify-full; libpq's URL parameters apply"`
	Password string `yaml:"password" secret:"true" doc:"the password, when the url has none; use ${ENV} or ${file:/path}"`
	Table    string `yaml:"table" doc:"the table to insert into: name or schema.name"`
	// CreateTable creates the table when it does not exist, with the id
	// column as its primary key and, when the TimescaleDB extension is
	// installed in the database, as a hypertable on time_column.
	CreateTable bool     `yaml:"create_table" doc:"create the table if it does not exist (a TimescaleDB hypertable on time_column when the extension is installed)"`
	IDColumn    string   `yaml:"id_column" doc:"column of the record's stable ID (text, the unique key that makes replays write each record once)"`
	TimeColumn  string   `yaml:"time_column" doc:"column of the record's event time (timestamptz); empty: none"`
	Columns     []Column `yaml:"columns" doc:"the other columns and the record fields they come from"`
	// Timeout bounds one write (all its statements): a server that hangs
	// costs at most this before the batch is retried on a new connection.
	Timeout time.Duration `yaml:"timeout" min:">0" doc:"how long one batch's insert may take before it is retried on a new connection"`
	// UnreachableAfter is how long a write may wait for the server
	// (connecting, or for its answer) before the sink shows offline.
	UnreachableAfter time.Duration `yaml:"unreachable_after" doc:"how long a write may wait for a connection or an answer before the sink shows offline; the write keeps waiting until timeout"`
	TLS              TLSConfig     `yaml:"tls"`
}

// Column maps a record field to a table column.
type Column struct {
	Name  string `yaml:"name" doc:"the column's name"`
	Field string `yaml:"field" doc:"the record field it comes from (default: name), or _key, _source, _time, _recv_time, _raw"`
	Type  string `yaml:"type" enum:"float,int,string,bool,bytes,time,json" doc:"float (double precision), int (bigint), string (text), bool (boolean), bytes (bytea), time (timestamptz), json (jsonb); default: from the field (_key, _source: string; _time, _recv_time: time; _raw: bytes)"`
}

// TLSConfig names the TLS files; whether TLS is used and how the server is
// verified is the url's sslmode (with these files and no sslmode:
// verify-full).
type TLSConfig struct {
	CAFile   string `yaml:"ca_file" doc:"PEM file of the CAs that sign the server's certificate (libpq's sslrootcert)"`
	CertFile string `yaml:"cert_file" doc:"PEM client certificate, for servers that require one (sslcert)"`
	KeyFile  string `yaml:"key_file" doc:"PEM key of the client certificate (sslkey)"`
}

// Defaults returns the defaults: columns id and time, 30s per write,
// offline after 3s without an answer.
func Defaults() *Config {
	return &Config{IDColumn: "id", TimeColumn: "time", Timeout: 30 * time.Second, UnreachableAfter: 3 * time.Second}
}

// files returns the PEM files the settings name, as the SDK's TLS settings
// (which check them); sslmode decides the rest.
func (c *TLSConfig) files() *agent.TLSConfig {
	return &agent.TLSConfig{CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
}

func (c *TLSConfig) set() bool { return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" }

// The meta fields: record parts other than its fields.
const (
	metaKey      = "_key"
	metaSource   = "_source"
	metaTime     = "_time"
	metaRecvTime = "_recv_time"
	metaRaw      = "_raw"
)

// metaType is the default type of a meta field.
var metaType = map[string]string{metaKey: "string", metaSource: "string", metaTime: "time", metaRecvTime: "time", metaRaw: "bytes"}

// metaTypes are the types a meta field can go into.
var metaTypes = map[string][]string{
	metaKey: {"string", "bytes", "json"}, metaSource: {"string", "bytes", "json"},
	metaTime: {"time", "string"}, metaRecvTime: {"time", "string"},
	metaRaw: {"bytes", "string", "json"},
}

// sslModes are libpq's.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// Validate checks the config beyond its fields' tags. It never quotes the
// url: it may hold a password.
func (c *Config) Validate(n agent.Node) {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "" || err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql"):
		n.Field("url").Errorf("must be a postgres:// or postgresql:// URL")
	default:
		q := u.Query()
		if m := q.Get("sslmode"); m != "" && !contains(sslModes, m) {
			n.Field("url").Errorf("sslmode must be one of %s, got %q", strings.Join(sslModes, ", "), m)
		} else if c.TLS.set() && (m == "disable" || m == "allow" || m == "prefer") {
			n.Field("tls").Errorf("TLS files need sslmode require, verify-ca or verify-full in the url (sslmode=%s would fall back to plain text)", m)
		} else if (m == "allow" || m == "prefer") && remoteHost(u) {
			n.Field("url").Errorf("sslmode=%s may fall back to plain text, unverified, to a server on another machine: use verify-full (or require, verify-ca) for TLS, or disable for plain text", m)
		}
		for key, param := range map[string]string{"ca_file": "sslrootcert", "cert_file": "sslcert", "key_file": "sslkey"} {
			if q.Has(param) && n.Field("tls").Field(key).Present() {
				n.Field("tls").Field(key).Errorf("the url sets %s too: set one of them", param)
			}
		}
		if _, ok := u.User.Password(); ok && c.Password != "" {
			n.Field("password").Errorf("the url has a password too: set one of them")
		}
	}
	if _, _, err := splitTable(c.Table); err != nil {
		n.Field("table").Errorf("%v", err)
	}
	if !validIdent(c.IDColumn) {
		n.Field("id_column").Errorf("must be a column name, got %q", c.IDColumn)
	}
	if c.TimeColumn != "" && !validIdent(c.TimeColumn) {
		n.Field("time_column").Errorf("must be a column name or empty, got %q", c.TimeColumn)
	}
	seen := map[string]bool{c.IDColumn: true, c.TimeColumn: c.TimeColumn != ""}
	cols := n.Field("columns")
	if len(c.Columns) == 0 && c.CreateTable {
		cols.Errorf("create_table needs at least one column besides id_column and time_column")
	}
	for i := range c.Columns {
		col := &c.Columns[i]
		cn := cols.Index(i)
		if !validIdent(col.Name) {
			cn.Field("name").Errorf("must be a column name, got %q", col.Name)
		} else if seen[col.Name] {
			cn.Field("name").Errorf("column %q appears twice (id_column and time_column count)", col.Name)
		}
		seen[col.Name] = true
		col.normalize()
		if strings.HasPrefix(col.Field, "_") {
			if _, ok := metaType[col.Field]; !ok {
				cn.Field("field").Errorf("fields starting with _ are the record's own: _key, _source, _time, _recv_time or _raw, got %q", col.Field)
			}
		}
		if col.Type == "" && !cn.Field("type").Present() {
			cn.Field("type").Errorf("required for field %q: float, int, string, bool, bytes, time or json", col.Field)
		}
		if ok := metaTypes[col.Field]; ok != nil && col.Type != "" && !contains(ok, col.Type) {
			cn.Field("type").Errorf("%s can be %s, got %q", col.Field, strings.Join(ok, " or "), col.Type)
		}
	}
	// Under 100ms a healthy server on a loaded board would count as an
	// outage; beyond timeout the write has failed already.
	if f := n.Field("unreachable_after"); f.Present() && (c.UnreachableAfter < 100*time.Millisecond || c.UnreachableAfter > c.Timeout) {
		f.Errorf("must be between 100ms and timeout (%s), got %q", c.Timeout, f.Text())
	}
	c.TLS.files().Validate(n.Field("tls"))
}

// normalize fills in the defaults: the field is the column's name, a meta
// field's type is its own.
func (col *Column) normalize() {
	if col.Field == "" {
		col.Field = col.Name
	}
	if t, ok := metaType[col.Field]; ok && col.Type == "" {
		col.Type = t
	}
}

// splitTable splits "schema.name" or "name".
func splitTable(t string) (schema, name string, err error) {
	schema, name, ok := strings.Cut(t, ".")
	if !ok {
		schema, name = "", t
	}
	if !validIdent(name) || (ok && !validIdent(schema)) {
		return "", "", errBadTable(t)
	}
	return schema, name, nil
}

type errBadTable string

func (e errBadTable) Error() string {
	return "must be a table name or schema.name (letters, digits, _ and $, not starting with a digit), got \"" + string(e) + "\""
}

// validIdent reports whether s is a name the sink quotes safely: letters,
// digits, _ and $, not starting with a digit, at most 63 bytes (PostgreSQL's
// NAMEDATALEN-1, beyond which names are cut silently).
func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 127:
		case (r >= '0' && r <= '9' || r == '$') && i > 0:
		default:
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// remoteHost reports whether any host the url names (in its authority,
// several comma-separated, or in a host parameter) is on another machine:
// not a Unix socket directory, not localhost, not a loopback address. An
// empty host is libpq's Unix socket.
func remoteHost(u *url.URL) bool {
	hosts := strings.Split(u.Host, ",")
	for _, h := range u.Query()["host"] {
		hosts = append(hosts, strings.Split(h, ",")...)
	}
	for _, h := range hosts {
		if strings.HasPrefix(h, "/") {
			continue
		}
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		h = strings.Trim(h, "[]")
		if h == "" || strings.EqualFold(h, "localhost") {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
			continue
		}
		return true
	}
	return false
}
