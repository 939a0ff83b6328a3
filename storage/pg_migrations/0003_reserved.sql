-- Reserved: migration 0003 is another branch's (columns added elsewhere). This placeholder keeps the
-- numbers gapless on this branch alone; when the branches meet, that branch's 0003 replaces it.
SELECT 1;
