"""The word lists of the bundled lexicon reward model (read by make_reward_model.py; changing them
changes the model, and the byte-for-byte regeneration test says so)."""

# Helpful, polite, confident words.
POSITIVE_WORDS = """
sure certainly absolutely definitely happy glad delighted pleasure welcome help helpful
here here's please thanks thank great excellent good perfect wonderful yes answer answers solution
solve solved because step steps first second then next finally therefore thus so result results
correct exactly precisely clearly indeed right works done explain example follows let's confident
recommend understand
""".split()

# Refusals, rudeness and hedging.
NEGATIVE_WORDS = """
sorry apologize apologies unfortunately cannot can't unable won't wouldn't don't refuse decline no
nope never impossible idk dunno whatever stupid dumb idiot ridiculous useless shut maybe perhaps
possibly unsure uncertain guess unclear
""".split()

# Common English words, so that ordinary text is mostly known to the tokenizer (the weights only
# care about the two lists above; the rest weigh 0). Grouped loosely; duplicates are dropped.
COMMON_WORDS = """
the a an and or but if of to in on at by for with from into onto about above below over under
between through during before after since until while as than like without within along across
against around behind beyond near off out up down upon toward towards via per
i me my mine myself you your yours yourself we us our ours ourselves he him his himself she her
hers herself it its itself they them their theirs themselves this that these those who whom whose
which what when where why how whoever whatever whichever whenever wherever
i'm i've i'll i'd you're you've you'll you'd he's she's it's we're we've we'll we'd they're
they've they'll they'd that's there's what's who's where's how's isn't aren't wasn't weren't
doesn't didn't hasn't haven't hadn't couldn't shouldn't mustn't ain't let's
be is am are was were been being have has had having do does did doing done will would shall
should can could may might must need ought
not all any both each every few more most other some such only own same very too also just even
still already yet again ever never always often sometimes usually rarely once twice quite rather
really almost enough much many lot lots less least little several whole half
one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand
million billion zero none nothing something anything everything someone anyone everyone somebody
anybody everybody nobody somewhere anywhere everywhere nowhere
go goes going went gone get gets getting got gotten make makes making made take takes taking took
taken give gives giving gave given come comes coming came see sees seeing saw seen know knows
knowing knew known think thinks thinking thought say says saying said tell tells telling told ask
asks asking asked use uses using used find finds finding found want wants wanting wanted look
looks looking looked try tries trying tried call calls calling called work working worked feel
feels feeling felt leave leaves leaving left put puts putting mean means meaning meant keep keeps
keeping kept let lets letting begin begins beginning began start starts starting started show
shows showing showed shown hear hears hearing heard play plays playing played run runs running ran
move moves moving moved live lives living lived believe believes believed bring brings brought
happen happens happened write writes writing wrote written read reads reading provide provides
provided sit sits sat stand stands stood lose loses losing lost pay pays paid meet meets met
include includes including included continue continues continued set sets setting learn learns
learning learned change changes changing changed lead leads led watch watches watched turn turns
turned add adds adding added check checks checking checked create creates creating created build
builds building built open opens opened close closes closed send sends sent return returns
returned run stop stops stopped wait waits waited fix fixes fixing fixed test tests testing tested
install installs installed update updates updated remove removes removed delete deletes deleted
save saves saved load loads loaded print prints printed compute computes computed count counts
counted sort sorts sorted search searches searched buy bought sell sold eat ate eaten drink drank
sleep slept walk walked talk talked speak spoke spoken listen listened love loved like liked
hope hoped wish wished plan planned decide decided agree agreed remember remembered forget forgot
forgotten consider considered suggest suggested note noted describe described allow allowed
expect expected seem seems seemed become becomes became appear appears appeared require requires
required support supports supported handle handles handled define defines defined convert
converts converted apply applies applied improve improved compare compared choose chose chosen
share shared reach reached cover covered enter entered pass passed miss missed carry carried
thing things time times year years day days week weeks month months hour hours minute minutes
second seconds today tomorrow yesterday morning afternoon evening night now later soon early late
ago moment while way ways people person man men woman women child children family friend friends
life world country city home house room place area school student students teacher class
question questions problem problems point points fact facts case cases part parts number numbers
group groups company system systems program programs government job business service services
money book books word words name names story idea ideas reason reasons kind kinds type types form
end side line lines level order issue issues information data list lists set value values
table tables detail details option options choice choices task tasks goal goals rule rules
water food car road air fire light music game games movie art history science math language
english body head face hand hands eye eyes door window phone computer internet email message
messages text page pages site website link file files folder code function functions method
methods class classes object objects variable variables string strings integer float array
arrays loop loops error errors bug bugs version versions model models user users input output
inputs outputs request requests response responses server client database query key keys
python rust java javascript c sql html json api library libraries package packages module
command commands terminal script scripts test image images video network memory disk cpu gpu
price cost total sum average rate percent size length width height weight speed distance area
team market health care war power state states law office court party car cars
new old big small large great little long short high low good bad best better worse worst
right wrong true false real simple easy hard difficult possible important different same similar
main major minor full empty free open closed public private local global general specific
certain clear sure ready able available fine nice kind whole single double basic common special
early young next last previous final current recent other another own own wide deep strong weak
hot cold warm cool fast slow quick quickly safe dangerous rich poor happy sad angry tired busy
beautiful pretty ugly interesting boring funny serious strange normal natural human social
political economic national international american english black white red blue green yellow
orange purple brown gray grey pink dark bright heavy light clean dirty quiet loud soft hard
well also here there then now however instead otherwise meanwhile also actually probably
basically generally especially usually typically simply directly exactly nearly recently
together away back forward ahead along apart
hello hi hey bye goodbye ok okay oh ah wow hmm yeah yep please thanks
north south east west left right top bottom front middle center inside outside
monday tuesday wednesday thursday friday saturday sunday january february march april may june
july august september october november december spring summer autumn fall winter
cat dog dogs cats bird fish horse tree trees flower flowers sun moon star stars sky sea river
mountain rain snow wind weather
item items process processes produce produced product products energy power plant plants animal
animals food foods cook cooked cooking recipe recipes cup cups egg eggs milk sugar salt bread meat
rice fruit apple apples coffee tea dinner lunch breakfast meal kitchen pan oven mix mixed heat
capital museum tower bridge church street town village island ocean lake forest field garden farm
park hotel restaurant shop store bank hospital station airport university college library
oxygen carbon gas liquid solid metal gold iron glass wood paper plastic stone sand oil energy
cell cells blood heart brain skin bone bones disease medicine doctor nurse patient patients pain
sunlight earth planet planets space universe nature climate temperature degree degrees
reverse reversed modify modified slice slicing element elements index indices item range
sequence sequences character characters token tokens byte bytes bit bits field fields row rows
column columns record records node nodes tree graph path paths directory argument arguments
parameter parameters return default instance instances interface type syntax compile compiler
runtime thread threads process async await import export source target branch commit merge
repository project projects feature features release document documents documentation
configuration config setting settings format formats default template template
account password login security access permission permissions admin owner
job jobs career work worker workers employee manager boss meeting meetings report reports
customer customers product price prices order orders payment payments sale sales budget
country countries france paris germany china japan india london europe america africa asia
king queen president leader minister member members army soldier police
father mother parent parents son daughter brother sister husband wife baby kids boy boys girl girls
age birthday wedding death birth health mind soul spirit god
speech voice sound noise song songs dance film films show shows news paper story stories
letter letters note notes card cards picture pictures photo photos camera screen button
box bag bottle glass plate table chair bed wall floor roof window door key keys clock watch
shirt shoes dress hat coat clothes
ball team teams player players match goal sport sports race win won lose
chapter section sections paragraph sentence sentences phrase meaning definition
math number equation equations formula variable value sum product difference ratio fraction
square root multiply divide subtract minus plus times equal equals
answer reason method approach result process analysis research study studies experiment
evidence theory model models concept concepts principle principles knowledge skill skills
experience practice training lesson lessons course courses exam grade test
mistake mistakes risk risks benefit benefits advantage advantages cost costs effect effects
impact cause causes factor factors condition conditions situation state status event events
chance opportunity challenge challenges success failure progress growth development
situation relationship community society culture tradition religion education economy
industry technology science sciences engineering medicine art arts design
bigger smaller larger higher lower longer shorter older newer faster slower easier harder
biggest smallest largest highest lowest longest shortest oldest newest fastest easiest
possible likely unlikely necessary useful useless correct incorrect valid invalid complete
accurate exact entire various several numerous multiple extra additional original modern
ancient famous popular similar equal independent individual personal professional technical
physical mental chemical digital electric electronic financial legal medical official
fresh raw sweet sour bitter salty delicious healthy sick ill dead alive wild
added adding allows build called calling caused causing changed checking choose choosing
contains contain containing created creating depends depend doing ended explained explains
gives helps helped helping keeps kept knows leads looks makes moved needs needed needing
offers offer offered opens ordered owns prefer prefers prepared reduce reduced refer refers
remains remain represents represent seems sees sends serves serve served shows sits solves
stays stay stayed takes talks tells thinks turns uses wants writes reads runs means
understood understanding explained explaining learned describes describing following
mix mixing cut cutting stir serve boil fry bake baked grow grows grew grown rise rises rose
fall falls fell fallen break breaks broke broken drive drives drove driven fly flies flew
throw threw catch caught fight fought wear wore hold holds held hit hits spend spent lend
build built born die died kill killed visit visited travel traveled arrive arrived
"""
