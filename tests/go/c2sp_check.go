// c2sp_check: what an outside auditor with Go's own packages checks of a lineage_platform log.
//
//	c2sp_check note VKEY CHECKPOINT                       verify the signed-note checkpoint
//	c2sp_check inclusion VKEY CHECKPOINT INDEX LEAF PROOF...  + an RFC 9162 inclusion proof
//	c2sp_check tiles VKEY DIR INDEX                       + a proof built from C2SP tiles in DIR
//	c2sp_check cosigned VKEY WITNESS_VKEY CHECKPOINT      + a cosignature/v1 by the witness
//
// Prints "ok" or one error line and exits 1. Uses golang.org/x/mod/sumdb/{note,tlog} only.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Printf("error: "+format+"\n", args...)
	os.Exit(1)
}

func openCheckpoint(vkey string, msg []byte) (string, tlog.Tree) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		fail("note: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint: too few lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		fail("checkpoint root: %v", err)
	}
	var h tlog.Hash
	copy(h[:], root)
	return lines[0], tlog.Tree{N: size, Hash: h}
}

// cosigVerifier checks a C2SP cosignature/v1 (alg 0x04): 8-byte time || Ed25519 over
// "cosignature/v1\ntime T\n" || note text.
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (c cosigVerifier) Name() string    { return c.name }
func (c cosigVerifier) KeyHash() uint32 { return c.hash }
func (c cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 72 {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	m := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	return ed25519.Verify(c.key, m, sig[8:])
}

func parseCosigVkey(vkey string) cosigVerifier {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		fail("witness vkey: malformed")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x04 {
		fail("witness vkey: not a cosignature/v1 Ed25519 key")
	}
	sum := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	h := binary.BigEndian.Uint32(sum[:4])
	if fmt.Sprintf("%08x", h) != parts[1] {
		fail("witness vkey: key hash does not match")
	}
	return cosigVerifier{parts[0], h, ed25519.PublicKey(raw[1:])}
}

// dirTiles reads C2SP tlog-tiles (tile/<L>/<N>[.p/<W>]) from a folder for tlog.TileHashReader.
type dirTiles struct{ dir string }

func (d dirTiles) Height() int { return 8 }
func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		// Go's path is tile/8/<L>/<N>; C2SP drops the height.
		p := "tile/" + strings.TrimPrefix(t.Path(), "tile/8/")
		data, err := os.ReadFile(d.dir + "/" + p)
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}
func (d dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func main() {
	if len(os.Args) < 4 {
		fail("usage: c2sp_check note|inclusion|tiles|cosigned ...")
	}
	mode, vkey := os.Args[1], os.Args[2]
	switch mode {
	case "note":
		msg, err := os.ReadFile(os.Args[3])
		if err != nil {
			fail("%v", err)
		}
		openCheckpoint(vkey, msg)
	case "cosigned":
		msg, err := os.ReadFile(os.Args[4])
		if err != nil {
			fail("%v", err)
		}
		openCheckpoint(vkey, msg)
		w := parseCosigVkey(os.Args[3])
		if _, err := note.Open(msg, note.VerifierList(w)); err != nil {
			fail("cosignature: %v", err)
		}
	case "inclusion":
		msg, err := os.ReadFile(os.Args[3])
		if err != nil {
			fail("%v", err)
		}
		_, tree := openCheckpoint(vkey, msg)
		index, _ := strconv.ParseInt(os.Args[4], 10, 64)
		leaf, err := base64.StdEncoding.DecodeString(os.Args[5])
		if err != nil || len(leaf) != 32 {
			fail("leaf hash")
		}
		var proof tlog.RecordProof
		for _, p := range os.Args[6:] {
			b, err := base64.StdEncoding.DecodeString(p)
			if err != nil || len(b) != 32 {
				fail("proof hash")
			}
			var h tlog.Hash
			copy(h[:], b)
			proof = append(proof, h)
		}
		var lh tlog.Hash
		copy(lh[:], leaf)
		if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, lh); err != nil {
			fail("inclusion: %v", err)
		}
	case "tiles":
		dir := os.Args[3]
		msg, err := os.ReadFile(dir + "/checkpoint")
		if err != nil {
			fail("%v", err)
		}
		_, tree := openCheckpoint(vkey, msg)
		index, _ := strconv.ParseInt(os.Args[4], 10, 64)
		hr := tlog.TileHashReader(tree, dirTiles{dir})
		proof, err := tlog.ProveRecord(tree.N, index, hr)
		if err != nil {
			fail("prove from tiles: %v", err)
		}
		leaves, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
		if err != nil {
			fail("leaf from tiles: %v", err)
		}
		if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, leaves[0]); err != nil {
			fail("inclusion: %v", err)
		}
		// The entry bundle holds the record itself: its hash must be that leaf.
		if len(os.Args) > 5 {
			entry, err := base64.StdEncoding.DecodeString(os.Args[5])
			rh := tlog.RecordHash(entry)
			if err != nil || !bytes.Equal(rh[:], leaves[0][:]) {
				fail("entry does not hash to the leaf")
			}
		}
	default:
		fail("unknown mode %s", mode)
	}
	fmt.Println("ok")
}
