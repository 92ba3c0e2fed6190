// jsgo drives the real containers/storage library (Debian's 1.43) for journalstore's interop
// tests: every write goes through storage.Store, so it takes Go's locks, rewrites images.json
// and touches the last-writer bytes of images.lock exactly as podman would.
//
// Built in GOPATH mode against the Debian packages:
//
//	GO111MODULE=off GOPATH=<tmp>:/usr/share/gocode go build
//
// Usage: jsgo --root R --runroot RR COMMAND [ARGS]   (the vfs driver is always used)
//
//	dump                                   every image, all fields and big-data bytes, as one JSON document
//	watch [--interval 50ms] [--max 10m]    one long-lived store; a JSON line whenever the images change
//	create [--id X] [--name N]... [--layer L] [--digest D] [--metadata M] [--created RFC3339]
//	       [--big-data KEY=@FILE]... [--flag K=JSON]...
//	add-names ID NAME...  |  set-names ID NAME...  |  remove-names ID NAME...
//	set-big-data ID KEY FILE  |  delete ID
//	race N PREFIX ID                       N AddNames calls (PREFIX0, PREFIX1, ...), each its own store write
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/containers/storage"
	"github.com/containers/storage/pkg/reexec"
	digest "github.com/opencontainers/go-digest"
)

var root, runroot string

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// newFlags accepts --root/--runroot after the command too, so both orders work.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.StringVar(&root, "root", root, "graph root")
	fs.StringVar(&runroot, "runroot", runroot, "run root")
	return fs
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "jsgo: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		die("%s: %v", what, err)
	}
}

func openStore() storage.Store {
	if root == "" || runroot == "" {
		die("--root and --runroot are required")
	}
	s, err := storage.GetStore(storage.StoreOptions{
		GraphRoot: root, RunRoot: runroot, GraphDriverName: "vfs",
	})
	check(err, "opening the store")
	return s
}

func closeStore(s storage.Store) {
	_, err := s.Shutdown(false)
	check(err, "shutting the store down")
}

// sha256Manifest is the digestManifest callback: sha256 of the bytes, as journalstore's default.
func sha256Manifest(b []byte) (digest.Digest, error) { return digest.Canonical.FromBytes(b), nil }

// dumpedImage carries every field of storage.Image, including those images.json omits.
type dumpedImage struct {
	ID              string                   `json:"id"`
	Digest          digest.Digest            `json:"digest"`
	Digests         []digest.Digest          `json:"digests"`
	Names           []string                 `json:"names"`
	NamesHistory    []string                 `json:"names_history"`
	TopLayer        string                   `json:"top_layer"`
	MappedTopLayers []string                 `json:"mapped_top_layers"`
	Metadata        string                   `json:"metadata"`
	BigDataNames    []string                 `json:"big_data_names"`
	BigDataSizes    map[string]int64         `json:"big_data_sizes"`
	BigDataDigests  map[string]digest.Digest `json:"big_data_digests"`
	Created         string                   `json:"created"`
	ReadOnly        bool                     `json:"read_only"`
	Flags           map[string]interface{}   `json:"flags"`
	BigData         map[string]string        `json:"big_data"` // key -> base64 of the bytes
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func dump(s storage.Store) {
	images, err := s.Images()
	check(err, "listing images")
	out := make([]dumpedImage, 0, len(images))
	for _, img := range images {
		d := dumpedImage{
			ID: img.ID, Digest: img.Digest, Digests: img.Digests, Names: nonNil(img.Names),
			NamesHistory: nonNil(img.NamesHistory), TopLayer: img.TopLayer,
			MappedTopLayers: nonNil(img.MappedTopLayers), Metadata: img.Metadata,
			BigDataNames: nonNil(img.BigDataNames), BigDataSizes: img.BigDataSizes,
			BigDataDigests: img.BigDataDigests, Created: img.Created.Format(time.RFC3339Nano),
			ReadOnly: img.ReadOnly, Flags: img.Flags, BigData: map[string]string{},
		}
		if d.Digests == nil {
			d.Digests = []digest.Digest{}
		}
		if d.BigDataSizes == nil {
			d.BigDataSizes = map[string]int64{}
		}
		if d.BigDataDigests == nil {
			d.BigDataDigests = map[string]digest.Digest{}
		}
		if d.Flags == nil {
			d.Flags = map[string]interface{}{}
		}
		for _, key := range img.BigDataNames {
			data, err := s.ImageBigData(img.ID, key)
			check(err, fmt.Sprintf("reading big data %q of %s", key, img.ID))
			d.BigData[key] = base64.StdEncoding.EncodeToString(data)
		}
		out = append(out, d)
	}
	check(json.NewEncoder(os.Stdout).Encode(map[string]interface{}{"images": out}), "writing")
}

// watchedImage is what a long-lived client notices: the image, its names and its data digests.
type watchedImage struct {
	ID             string                   `json:"id"`
	Names          []string                 `json:"names"`
	BigDataDigests map[string]digest.Digest `json:"big_data_digests"`
}

// watch behaves like CRI-O or `podman system service`: one store for its whole life, asking it
// for the images every interval; the library alone decides whether to reload images.json.
func watch(s storage.Store, interval, maxRun time.Duration) {
	deadline := time.Now().Add(maxRun)
	var last []watchedImage
	first, seq := true, 0
	enc := json.NewEncoder(os.Stdout) // os.Stdout is unbuffered: each line is one write(2)
	for time.Now().Before(deadline) {
		images, err := s.Images()
		if err != nil {
			check(enc.Encode(map[string]string{"error": err.Error()}), "writing")
		} else {
			cur := make([]watchedImage, 0, len(images))
			for _, img := range images {
				cur = append(cur, watchedImage{img.ID, nonNil(img.Names), img.BigDataDigests})
			}
			if first || !reflect.DeepEqual(cur, last) {
				seq++
				check(enc.Encode(map[string]interface{}{
					"seq": seq, "time": time.Now().UTC().Format(time.RFC3339Nano), "images": cur,
				}), "writing")
				last, first = cur, false
			}
		}
		time.Sleep(interval)
	}
}

func create(s storage.Store, args []string) {
	fs := newFlags("create")
	id := fs.String("id", "", "image ID (random if empty)")
	layer := fs.String("layer", "", "top layer (must exist in the layer store)")
	dig := fs.String("digest", "", "image digest")
	metadata := fs.String("metadata", "", "metadata")
	created := fs.String("created", "", "creation time, RFC 3339 (default now)")
	var names, bigData, flags multi
	fs.Var(&names, "name", "a name (repeatable)")
	fs.Var(&bigData, "big-data", "KEY=@FILE (repeatable)")
	fs.Var(&flags, "flag", "KEY=JSON value (repeatable)")
	check(fs.Parse(args), "arguments")
	opts := &storage.ImageOptions{Digest: digest.Digest(*dig)}
	if *created != "" {
		t, err := time.Parse(time.RFC3339Nano, *created)
		check(err, "--created")
		opts.CreationDate = t
	}
	img, err := s.CreateImage(*id, names, *layer, *metadata, opts)
	check(err, "creating the image")
	for _, item := range bigData {
		key, file, ok := strings.Cut(item, "=@")
		if !ok {
			die("--big-data wants KEY=@FILE, not %q", item)
		}
		data, err := os.ReadFile(file)
		check(err, "reading "+file)
		check(s.SetImageBigData(img.ID, key, data, sha256Manifest), "setting big data "+key)
	}
	for _, item := range flags {
		key, value, ok := strings.Cut(item, "=")
		if !ok {
			die("--flag wants KEY=JSON, not %q", item)
		}
		var v interface{}
		check(json.Unmarshal([]byte(value), &v), "--flag value")
		setFlag(s, img.ID, key, v)
	}
	fmt.Println(img.ID)
}

// setFlag goes to the image store itself (the Store interface has no flag method), taking its
// lock and reloading first exactly as the Store's own methods do.
func setFlag(s storage.Store, id, key string, value interface{}) {
	withImageStore, ok := s.(interface {
		ImageStore() (storage.ImageStore, error)
	})
	if !ok {
		die("this library version has no ImageStore() accessor")
	}
	istore, err := withImageStore.ImageStore()
	check(err, "image store")
	istore.Lock()
	defer istore.Unlock()
	check(istore.ReloadIfChanged(), "reloading")
	check(istore.SetFlag(id, key, value), "setting flag "+key)
}

func main() {
	if reexec.Init() {
		return
	}
	global := newFlags("jsgo")
	check(global.Parse(os.Args[1:]), "arguments")
	if global.NArg() < 1 {
		die("usage: jsgo --root R --runroot RR dump|watch|create|add-names|set-names|remove-names|" +
			"set-big-data|delete|race ...")
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	if cmd == "create" { // create has its own flags; parse them before opening the store
		s := openStore()
		defer closeStore(s)
		create(s, rest)
		return
	}
	fs := newFlags(cmd)
	interval := fs.Duration("interval", 50*time.Millisecond, "watch: polling interval")
	maxRun := fs.Duration("max", 10*time.Minute, "watch: exit after this long (a safety net)")
	check(fs.Parse(rest), "arguments")
	args := fs.Args()
	need := func(n int) {
		if len(args) < n {
			die("%s needs at least %d arguments", cmd, n)
		}
	}
	s := openStore()
	defer closeStore(s)
	switch cmd {
	case "dump":
		dump(s)
	case "watch":
		watch(s, *interval, *maxRun)
	case "add-names":
		need(2)
		check(s.AddNames(args[0], args[1:]), "add-names")
	case "set-names":
		need(1)
		check(s.SetNames(args[0], args[1:]), "set-names")
	case "remove-names":
		need(2)
		check(s.RemoveNames(args[0], args[1:]), "remove-names")
	case "set-big-data":
		need(3)
		data, err := os.ReadFile(args[2])
		check(err, "reading "+args[2])
		check(s.SetImageBigData(args[0], args[1], data, sha256Manifest), "set-big-data")
	case "delete":
		need(1)
		_, err := s.DeleteImage(args[0], true)
		check(err, "delete")
	case "race":
		need(3)
		n, err := strconv.Atoi(args[0])
		check(err, "N")
		for i := 0; i < n; i++ {
			check(s.AddNames(args[2], []string{args[1] + strconv.Itoa(i)}), fmt.Sprintf("write %d", i))
		}
		fmt.Println(n)
	default:
		check(errors.New("unknown command "+strconv.Quote(cmd)), "usage")
	}
}
