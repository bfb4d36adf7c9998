package storage

import "testing"

func TestPlanParts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size, partSize int64
		wantParts      int
		wantLast       int64
	}{
		{10 << 20, 5 << 20, 2, 5 << 20},
		{11 << 20, 5 << 20, 3, 1 << 20},
		{5 << 20, 5 << 20, 1, 5 << 20},
		{5 << 40, 5 << 20, maxParts, 0}, // 5 TiB: part size grows to stay within 10,000 parts
	}
	for _, tt := range tests {
		parts := planParts(tt.size, tt.partSize)
		if len(parts) > maxParts || (tt.wantParts != 0 && len(parts) != tt.wantParts) {
			t.Fatalf("planParts(%d, %d) = %d parts, want %d", tt.size, tt.partSize, len(parts), tt.wantParts)
		}
		var total int64
		for i, p := range parts {
			if p.number != int32(i+1) || p.offset != total {
				t.Fatalf("part %d = %+v", i, p)
			}
			total += p.size
		}
		if total != tt.size || (tt.wantLast != 0 && parts[len(parts)-1].size != tt.wantLast) {
			t.Fatalf("planParts(%d, %d): total %d, last %d", tt.size, tt.partSize, total, parts[len(parts)-1].size)
		}
	}
}
